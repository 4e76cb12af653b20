//! age encryption: recipients for backing up, identities for restoring, and key generation.
//!
//! A backing-up host holds only [`Recipients`] (public keys). [`Identities`] (the private key) are loaded only by
//! the commands that read data back: restore, verify, drill, prune (drill records), report and recover.

use std::fmt;
use std::io::{self, BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use age::secrecy::ExposeSecret;

use crate::config::EncryptionConfig;
use crate::error::{Error, Result};

/// Checks `[encryption] recipients`: each one parses.
pub fn validate(encryption: &EncryptionConfig) -> Result<()> {
    for recipient in &encryption.recipients {
        parse_recipient(recipient)?;
    }
    Ok(())
}

/// Parses one recipient: an age X25519 key (`age1...`) or an ssh-ed25519 / ssh-rsa public key.
pub fn parse_recipient(text: &str) -> Result<Box<dyn age::Recipient + Send + Sync>> {
    let text = text.trim();
    if text.starts_with("age1") {
        return text
            .parse::<age::x25519::Recipient>()
            .map(|r| Box::new(r) as _)
            .map_err(|e| Error::ConfigInvalid(format!("recipient {}: {e}", abbreviate(text))));
    }
    if text.starts_with("ssh-") {
        return text.parse::<age::ssh::Recipient>().map(|r| Box::new(r) as _).map_err(|_| {
            Error::ConfigInvalid(format!(
                "recipient {}: not a supported ssh public key (use ssh-ed25519 or ssh-rsa)",
                abbreviate(text)
            ))
        });
    }
    Err(Error::ConfigInvalid(format!(
        "recipient {}: expected an age public key (age1...) or an ssh-ed25519 / ssh-rsa public key",
        abbreviate(text)
    )))
}

fn abbreviate(text: &str) -> String {
    if text.chars().count() > 24 {
        format!("{:?}", format!("{}...", text.chars().take(20).collect::<String>()))
    } else {
        format!("{text:?}")
    }
}

/// The public keys every object is encrypted to.
pub struct Recipients {
    keys: Vec<Arc<dyn age::Recipient + Send + Sync>>,
}

impl fmt::Debug for Recipients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Recipients({} keys)", self.keys.len())
    }
}

impl Recipients {
    pub fn parse(texts: &[String]) -> Result<Recipients> {
        if texts.is_empty() {
            return Err(Error::NoRecipients);
        }
        let keys = texts.iter().map(|t| parse_recipient(t).map(Arc::from)).collect::<Result<_>>()?;
        Ok(Recipients { keys })
    }

    /// These recipients and one more: an index object is encrypted to the repository's recipients and to the
    /// index recipient derived from the dedup key (`chunks::keys`).
    pub fn and(&self, extra: age::x25519::Recipient) -> Recipients {
        let mut keys = self.keys.clone();
        keys.push(Arc::new(extra));
        Recipients { keys }
    }

    /// Starts an age stream to these recipients on `output`. The returned writer's `finish()` is mandatory.
    pub fn encrypt<W: Write>(&self, output: W) -> io::Result<age::stream::StreamWriter<W>> {
        let encryptor = age::Encryptor::with_recipients(self.keys.iter().map(|k| k.as_ref() as &dyn age::Recipient))
            .map_err(io::Error::other)?;
        encryptor.wrap_output(output)
    }

    /// Encrypts a small value into ASCII armor (used for the private half of a manifest).
    pub fn seal(&self, plaintext: &[u8]) -> io::Result<String> {
        let mut armored = Vec::new();
        let armor = age::armor::ArmoredWriter::wrap_output(&mut armored, age::armor::Format::AsciiArmor)?;
        let mut writer = self.encrypt(armor)?;
        writer.write_all(plaintext)?;
        writer.finish()?.finish()?;
        String::from_utf8(armored).map_err(io::Error::other)
    }
}

/// Private keys, loaded from `identity_file`.
pub struct Identities {
    path: PathBuf,
    keys: Vec<Box<dyn age::Identity + Send + Sync>>,
}

impl fmt::Debug for Identities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identities({})", self.path.display())
    }
}

/// Why an age stream could not be opened.
#[derive(Debug)]
pub enum DecryptFailure {
    /// The identity does not match any recipient of the stream.
    WrongIdentity,
    /// The stream is not a well-formed age file, or its header was altered.
    Corrupt(String),
}

/// Why an identity file cannot be used (the cause of [`Error::Identity`]).
#[derive(Debug, thiserror::Error)]
pub enum IdentityFileProblem {
    /// The file cannot be read (missing, not readable by dr).
    #[error("{0}")]
    Read(#[source] io::Error),
    /// The text is not an identity: the age or ssh parser's own error.
    #[error("{0}")]
    Parse(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("passphrase-protected ssh keys cannot be used unattended; use an age identity")]
    EncryptedSshKey,
    #[error("unsupported ssh key type (use ed25519 or rsa)")]
    UnsupportedSshKey,
    #[error("the file holds no identity")]
    Empty,
}

impl Identities {
    /// The identities of `[encryption] identity_file`, which `action` needs to decrypt.
    pub fn load_configured(encryption: &EncryptionConfig, action: &'static str) -> Result<std::sync::Arc<Identities>> {
        let path = encryption.identity_file.as_ref().ok_or(Error::NoIdentity { action })?;
        Ok(std::sync::Arc::new(Identities::load(path)?))
    }

    pub fn load(path: &Path) -> Result<Identities> {
        let identity_error = |problem: IdentityFileProblem| Error::Identity { path: path.to_path_buf(), problem };
        let parse_error = |e: Box<dyn std::error::Error + Send + Sync>| identity_error(IdentityFileProblem::Parse(e));
        let text = std::fs::read_to_string(path).map_err(|e| identity_error(IdentityFileProblem::Read(e)))?;
        warn_if_readable_by_others(path);
        let keys: Vec<Box<dyn age::Identity + Send + Sync>> = if text.trim_start().starts_with("-----BEGIN") {
            let key = age::ssh::Identity::from_buffer(text.as_bytes(), Some(path.display().to_string()))
                .map_err(|e| parse_error(e.into()))?;
            match key {
                age::ssh::Identity::Unencrypted(_) => vec![Box::new(key)],
                age::ssh::Identity::Encrypted(_) => return Err(identity_error(IdentityFileProblem::EncryptedSshKey)),
                age::ssh::Identity::Unsupported(_) => {
                    return Err(identity_error(IdentityFileProblem::UnsupportedSshKey));
                }
            }
        } else {
            age::IdentityFile::from_buffer(text.as_bytes())
                .map_err(|e| parse_error(e.into()))?
                .into_identities()
                .map_err(|e| parse_error(e.into()))?
        };
        if keys.is_empty() {
            return Err(identity_error(IdentityFileProblem::Empty));
        }
        Ok(Identities { path: path.to_path_buf(), keys })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens an age stream for reading.
    pub fn decrypt<R: BufRead>(&self, input: R) -> std::result::Result<age::stream::StreamReader<R>, DecryptFailure> {
        let decryptor = age::Decryptor::new_buffered(input).map_err(|e| DecryptFailure::Corrupt(e.to_string()))?;
        decryptor.decrypt(self.keys.iter().map(|k| k.as_ref() as &dyn age::Identity)).map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => DecryptFailure::WrongIdentity,
            other => DecryptFailure::Corrupt(other.to_string()),
        })
    }

    /// Decrypts a small armored value written by [`Recipients::seal`]; `what` names it in errors.
    pub fn open(&self, armored: &str, what: &str) -> Result<Vec<u8>> {
        let reader = age::armor::ArmoredReader::new(armored.as_bytes());
        let mut stream =
            self.decrypt(io::BufReader::new(reader)).map_err(|failure| self.failure_error(failure, what))?;
        let mut plaintext = Vec::new();
        stream
            .read_to_end(&mut plaintext)
            .map_err(|e| Error::ObjectCorrupt { key: what.to_string(), reason: e.to_string() })?;
        Ok(plaintext)
    }

    /// Turns a [`DecryptFailure`] on `what` into the user-facing error.
    pub fn failure_error(&self, failure: DecryptFailure, what: &str) -> Error {
        match failure {
            DecryptFailure::WrongIdentity => Error::WrongIdentity { path: self.path.clone(), what: what.to_string() },
            DecryptFailure::Corrupt(reason) => Error::ObjectCorrupt { key: what.to_string(), reason },
        }
    }
}

fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            path = %path.display(),
            "the identity file is readable by other users; chmod 600 it"
        );
    }
}

/// A freshly generated X25519 key pair.
pub struct KeyPair {
    identity: age::x25519::Identity,
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyPair({})", self.recipient())
    }
}

impl KeyPair {
    pub fn generate() -> KeyPair {
        KeyPair { identity: age::x25519::Identity::generate() }
    }

    /// The public key, to put in `[encryption] recipients`.
    pub fn recipient(&self) -> String {
        self.identity.to_public().to_string()
    }

    /// The identity file's contents, in the same layout as `age-keygen` writes.
    pub fn identity_file_contents(&self) -> String {
        format!(
            "# created: {}\n# public key: {}\n{}\n",
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            self.recipient(),
            self.identity.to_string().expose_secret()
        )
    }

    /// Writes the identity file with mode 0600, refusing to replace an existing file.
    pub fn write_identity_file(&self, path: &Path) -> Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut file =
            std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    Error::IdentityFileExists { path: path.to_path_buf() }
                } else {
                    Error::io(format!("creating identity file {}", path.display()), e)
                }
            })?;
        file.write_all(self.identity_file_contents().as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Recipients, Identities, tempfile::TempDir) {
        let key = KeyPair::generate();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id.txt");
        key.write_identity_file(&path).unwrap();
        let recipients = Recipients::parse(&[key.recipient()]).unwrap();
        (recipients, Identities::load(&path).unwrap(), dir)
    }

    #[test]
    fn sealed_values_open_with_the_identity_and_not_with_another() {
        let (recipients, identities, _dir) = pair();
        let armored = recipients.seal(b"table names").unwrap();
        assert!(armored.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"));
        assert_eq!(identities.open(&armored, "manifest").unwrap(), b"table names");

        let (_, other, _dir2) = pair();
        let err = other.open(&armored, "manifest").unwrap_err();
        assert!(matches!(err, Error::WrongIdentity { .. }), "{err}");
    }

    #[test]
    fn identity_file_is_private_and_never_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id.txt");
        KeyPair::generate().write_identity_file(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let err = KeyPair::generate().write_identity_file(&path).unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
    }

    #[test]
    fn recipients_are_checked() {
        assert!(parse_recipient("age1notakey").is_err());
        assert!(parse_recipient("hello").is_err());
        let ssh = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsKLqeplhpW+uObz5dvMgjz1OxfM/XXUB+VHtZ6isGN alice@rust";
        assert!(parse_recipient(ssh).is_ok());
        assert!(matches!(Recipients::parse(&[]), Err(Error::NoRecipients)));
    }

    #[test]
    fn a_truncated_stream_fails_to_decrypt() {
        let (recipients, identities, _dir) = pair();
        let mut out = Vec::new();
        let mut w = recipients.encrypt(&mut out).unwrap();
        w.write_all(&vec![7u8; 200_000]).unwrap();
        w.finish().unwrap();
        out.truncate(out.len() - 100);
        let mut r = identities.decrypt(&out[..]).map_err(|_| ()).unwrap();
        let mut sink = Vec::new();
        assert!(r.read_to_end(&mut sink).is_err());
    }
}
