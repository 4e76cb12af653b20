#![allow(clippy::unwrap_used)]
mod common;
use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn show() {
    let site = Site::new().await;
    let r = site.dr(&["backup"]); println!("BACKUP code={} out={} err={}", r.code, r.stdout, r.stderr);
    let snap = r.stdout.trim().to_string();
    let r = site.dr(&["snapshots"]); println!("SNAPSHOTS {}{}", r.stdout, r.stderr);
    let r = site.dr(&["restore", "--to", "latest"]); println!("RESTORE-NONEMPTY code={} {}{}", r.code, r.stdout, r.stderr);
    let r = site.dr(&["restore", "--to", "yesterday"]); println!("BADTO code={} {}{}", r.code, r.stdout, r.stderr);
    let r = site.dr(&["restore", "--to", "2020-01-01T00:00:00Z"]); println!("OLDTIME code={} {}{}", r.code, r.stdout, r.stderr);
    let obj = site.object(&snap, "pg_dump.zst.age");
    let mut bytes = std::fs::read(&obj).unwrap(); let n = bytes.len(); bytes[n/2] ^= 1; std::fs::write(&obj, bytes).unwrap();
    let r = site.dr(&["verify"]); println!("VERIFY-FLIP code={} {}{}", r.code, r.stdout, r.stderr);
    let t = scratch().await;
    let r = site.dr(&["restore", "--to", "latest", "--only", "app", "--into", &format!("app={}", t.url("x"))]); println!("RESTORE-FLIP code={} {}{}", r.code, r.stdout, r.stderr);
    let r = site.dr(&["restore", "--to", "latest", "--jobs", "1", "--only", "app", "--into", &format!("app={}", t.url("y"))]); println!("RESTORE-FLIP-STREAM code={} {}{}", r.code, r.stdout, r.stderr);
    site.write_config("[objectives]\nrpo = \"1h\"\nbogus = 1\n");
    let r = site.dr(&["snapshots"]); println!("BADCONFIG code={} {}{}", r.code, r.stdout, r.stderr);
    std::fs::write(&site.config_path, std::fs::read_to_string(&site.config_path).unwrap().replace(&site.db.url(DATABASE), "host=127.0.0.1 port=1 dbname=x user=u password=hunter2").replace("bogus = 1\n", "")).unwrap();
    let r = site.dr(&["backup"]); println!("UNREACHABLE code={} {}{}", r.code, r.stdout, r.stderr);
}
