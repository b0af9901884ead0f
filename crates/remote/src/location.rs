//! Where a remote is: `s3://bucket/prefix` or `file:///absolute/dir`, and which keys are allowed
//! under it.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::RemoteError;

/// A remote's location, parsed from its `url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A bucket and a prefix inside it (no leading or trailing slash; empty for the bucket's top).
    S3 { bucket: String, prefix: String },
    /// A directory (a second disk, an NFS mount).
    Dir { path: PathBuf },
}

impl FromStr for Location {
    type Err = RemoteError;

    fn from_str(url: &str) -> Result<Location, RemoteError> {
        let bad = |reason: &str| RemoteError::BadUrl { url: url.into(), reason: reason.into() };
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            // S3's bucket naming rules, which every compatible store follows.
            let bucket_ok = (3..=63).contains(&bucket.len())
                && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
                && bucket.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
                && bucket.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric());
            if !bucket_ok {
                return Err(bad("the bucket name must be 3 to 63 lowercase letters, digits, '-' or '.'"));
            }
            let prefix = prefix.trim_end_matches('/');
            if !prefix.is_empty() {
                check_key(prefix).map_err(|_| bad("the prefix must be plain path segments (no '.', '..' or '//')"))?;
            }
            return Ok(Location::S3 { bucket: bucket.into(), prefix: prefix.into() });
        }
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(bad("a file:// url needs an absolute path: file:///mnt/backups"));
            }
            if path.split('/').any(|part| part == "..") {
                return Err(bad("the path must not contain '..'"));
            }
            return Ok(Location::Dir { path: PathBuf::from(path) });
        }
        Err(bad("use s3://bucket/prefix or file:///absolute/dir"))
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Location::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            Location::Dir { path } => write!(f, "file://{}", path.display()),
        }
    }
}

/// A key is plain path segments: not empty, no empty, `.` or `..` segment, no leading slash, no
/// control characters. Keys are lifeboat's own names, but a key read from a bucket (an import)
/// is hostile input, and a directory remote maps keys to files.
pub(crate) fn check_key(key: &str) -> Result<(), RemoteError> {
    let plain = !key.is_empty()
        && key.len() <= 1024
        && !key.chars().any(char::is_control)
        && key.split('/').all(|part| !part.is_empty() && part != "." && part != "..");
    if plain { Ok(()) } else { Err(RemoteError::BadKey { key: key.escape_debug().to_string() }) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_locations() {
        assert_eq!(
            "s3://backups/host-1/demo".parse::<Location>().unwrap(),
            Location::S3 { bucket: "backups".into(), prefix: "host-1/demo".into() }
        );
        assert_eq!(
            "s3://backups".parse::<Location>().unwrap(),
            Location::S3 { bucket: "backups".into(), prefix: "".into() }
        );
        assert_eq!("s3://backups/p/".parse::<Location>().unwrap().to_string(), "s3://backups/p");
        assert_eq!(
            "file:///mnt/backups".parse::<Location>().unwrap(),
            Location::Dir { path: PathBuf::from("/mnt/backups") }
        );
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        for (url, says) in [
            ("http://x/y", "use s3://"),
            ("s3://B/x", "bucket name"),
            ("s3://ab", "bucket name"),
            ("s3://bucket/a//b", "prefix"),
            ("s3://bucket/../b", "prefix"),
            ("file://relative/dir", "absolute"),
            ("file:///mnt/../etc", ".."),
        ] {
            let err = url.parse::<Location>().unwrap_err().to_string();
            assert!(err.contains(says), "{url}: {err}");
        }
    }

    #[test]
    fn keys_are_plain_segments() {
        for good in ["a.tar.gz", "demo/backup-7.tar.gz.age", "x/y/z"] {
            check_key(good).unwrap();
        }
        for bad in ["", "/a", "a/", "a//b", "./a", "a/../b", "..", "a\nb"] {
            assert!(check_key(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
