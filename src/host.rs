//! Who and where dr runs: the one host name and the one user name the whole crate records and shows (locks,
//! manifests, attempt and drill records, the audit log, alerts, libpq's default user).

/// This machine's host name (`gethostname`), else the empty string: the repository format documents an empty
/// `hostname` as "unknown" in manifests and records (docs/repository-format.md), and locks, the audit log and
/// alerts say the same thing the same way. (On Linux `gethostname` reads `uname`, which does not fail.)
pub fn hostname() -> String {
    nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The name of the user dr runs as: the user database's name for the effective user id (whose permissions dr
/// acts with, and which libpq takes as the default PostgreSQL user), else that id as a number. A container often
/// runs as a uid with no passwd entry; the number still identifies it, where `$USER` could name anyone.
pub fn user_name() -> String {
    let uid = nix::unistd::Uid::effective();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(user)) => user.name,
        _ => uid.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_machine_and_user_have_names() {
        assert!(!hostname().is_empty());
        assert!(!user_name().is_empty());
    }
}
