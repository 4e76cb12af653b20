//! Who and where dr runs: the one host name and the one user name the whole crate records and shows (locks,
//! manifests, attempt and drill records, the audit log, alerts, libpq's default user).

/// This machine's host name (`gethostname`), else `unknown`: a lock's owner, a record's origin and an alert
/// must always name a host, and `unknown` says plainly that the system would not tell.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .map(|h| h.to_string_lossy().into_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
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
    fn names_are_never_empty() {
        assert!(!hostname().is_empty());
        assert!(!user_name().is_empty());
    }
}
