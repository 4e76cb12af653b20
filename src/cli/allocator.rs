//! Process-wide allocator settings, made before any thread starts.

/// Caps glibc's malloc arenas at one per CPU (between 2 and 8) unless `MALLOC_ARENA_MAX` says otherwise.
///
/// glibc gives threads up to 8 arenas per CPU, and each keeps the blocks freed in it: the chunkers, the packer
/// and the runtime's threads each allocate and free chunks and buffers of up to megabytes, so a backup or
/// restore of 200,000 files peaked 13-17 MiB above its heap. Measured on 2 CPUs with 2 arenas: the restore of
/// 200,000 files 69-72 -> 51-55 MiB, its backup 65-70 -> 58 MiB, at the same speed (docs/benchmarks.md).
pub fn cap_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
            return;
        }
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 8);
        // SAFETY: mallopt only changes a malloc tunable, and this runs first in main, before any thread starts.
        #[allow(unsafe_code)]
        unsafe {
            nix::libc::mallopt(nix::libc::M_ARENA_MAX, cpus as i32);
        }
    }
}
