//! Exclude patterns of a files source.
//!
//! A pattern without `/` matches a name at any depth (`*.tmp`, `.cache`); a pattern with `/` matches the path
//! relative to the source root (`cache/**`, `/thumbs`; a leading `/` is optional). `*` stays inside one path
//! component, `**` crosses them. An excluded directory is skipped with everything in it.

use std::path::Path;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

#[derive(Debug, Clone)]
pub struct Excludes {
    by_name: GlobSet,
    by_path: GlobSet,
}

/// An exclude pattern that is not a glob; `pattern` is `None` when the set as a whole failed to build.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", .pattern.as_ref().map_or_else(|| "exclude patterns".to_string(), |p| format!("exclude pattern {p:?}")))]
pub struct BadExclude {
    pattern: Option<String>,
    source: globset::Error,
}

impl Excludes {
    pub fn new(patterns: &[String]) -> Result<Excludes, BadExclude> {
        let mut by_name = GlobSetBuilder::new();
        let mut by_path = GlobSetBuilder::new();
        for pattern in patterns {
            let anchored = pattern.trim_start_matches('/');
            let glob = GlobBuilder::new(anchored)
                .literal_separator(true)
                .build()
                .map_err(|source| BadExclude { pattern: Some(pattern.clone()), source })?;
            if pattern.contains('/') {
                by_path.add(glob);
            } else {
                by_name.add(glob);
            }
        }
        let build = |b: GlobSetBuilder| b.build().map_err(|source| BadExclude { pattern: None, source });
        Ok(Excludes { by_name: build(by_name)?, by_path: build(by_path)? })
    }

    /// Every entry below `root` that these patterns keep, sorted by name, never following links, without
    /// descending into an excluded directory: the one walk the archive, the size scan and listings share.
    pub fn walk<'a>(&'a self, root: &'a Path) -> impl Iterator<Item = walkdir::Result<walkdir::DirEntry>> + 'a {
        walkdir::WalkDir::new(root)
            .follow_links(false)
            .sort_by_file_name()
            .min_depth(1)
            .into_iter()
            .filter_entry(move |e| e.path().strip_prefix(root).map_or(true, |relative| !self.is_excluded(relative)))
    }

    /// Whether `relative` (a path below the source root) is excluded.
    pub fn is_excluded(&self, relative: &Path) -> bool {
        let by_name = relative.file_name().is_some_and(|name| self.by_name.is_match(name));
        by_name || self.by_path.is_match(relative)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn excludes(patterns: &[&str]) -> Excludes {
        Excludes::new(&patterns.iter().map(|p| p.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn names_match_at_any_depth_and_paths_from_the_root() {
        let e = excludes(&["*.tmp", "cache/**", "/thumbs"]);
        assert!(e.is_excluded(Path::new("upload.tmp")));
        assert!(e.is_excluded(Path::new("2026/11/upload.tmp")));
        assert!(!e.is_excluded(Path::new("2026/11/upload.jpg")));
        assert!(e.is_excluded(Path::new("cache/a/b.jpg")));
        assert!(!e.is_excluded(Path::new("cache")), "the directory itself stays, empty");
        assert!(!e.is_excluded(Path::new("users/cache/x")), "path patterns are anchored at the root");
        assert!(e.is_excluded(Path::new("thumbs")));
        assert!(!e.is_excluded(Path::new("a/thumbs")));
    }

    #[test]
    fn bad_patterns_are_named() {
        let err = Excludes::new(&["a[".to_string()]).unwrap_err();
        assert!(err.to_string().contains("a["), "{err}");
    }
}
