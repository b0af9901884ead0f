//! Extended attributes and POSIX ACLs, stored as GNU tar 1.34 `--xattrs --acls` stores them
//! (checked against its output by `tests/fidelity.rs`): one `SCHILY.xattr.NAME` PAX record per
//! attribute (raw value; `%` and `=` in the name written `%25` and `%3D`), and for ACLs also
//! `SCHILY.acl.access` / `SCHILY.acl.default` in the long text form, one entry per line.
//!
//! Kept: `user.*`, `trusted.*` (listed to root only), `security.*` except `security.selinux`
//! (a label belongs to the policy of the host that restores), and the two ACL attributes.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::pax::{PaxBuf, Record};

/// One attribute: name (no NUL) and raw value.
pub(crate) type Xattr = (Vec<u8>, Vec<u8>);

/// Attributes that will not be restored: name and reason.
pub(crate) type Refused = Vec<(String, String)>;

const ACL_ACCESS: &[u8] = b"system.posix_acl_access";
const ACL_DEFAULT: &[u8] = b"system.posix_acl_default";
const XATTR_PREFIX: &[u8] = b"SCHILY.xattr.";

/// Whether lifeboat archives and restores the attribute `name`.
pub(crate) fn wanted(name: &[u8]) -> bool {
    name.starts_with(b"user.")
        || name.starts_with(b"trusted.")
        || (name.starts_with(b"security.") && name != b"security.selinux")
        || name == ACL_ACCESS
        || name == ACL_DEFAULT
}

fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)
}

fn unsupported(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EOPNOTSUPP)
}

/// Where attributes are read from: a path (not following a symlink) or an open file.
enum At<'a> {
    Path(&'a CStr),
    Fd(RawFd),
}

impl At<'_> {
    fn list(&self, buf: &mut [u8]) -> isize {
        match self {
            // SAFETY: the path is NUL-terminated and `buf` is writable for its length.
            At::Path(c) => unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) },
            // SAFETY: the descriptor is open for the call and `buf` is writable for its length.
            At::Fd(fd) => unsafe { libc::flistxattr(*fd, buf.as_mut_ptr().cast(), buf.len()) },
        }
    }

    fn get(&self, name: &CStr, buf: &mut [u8]) -> isize {
        match self {
            // SAFETY: both strings are NUL-terminated and `buf` is writable for its length.
            At::Path(c) => unsafe { libc::lgetxattr(c.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) },
            // SAFETY: the descriptor is open, the name NUL-terminated, `buf` writable for its length.
            At::Fd(fd) => unsafe { libc::fgetxattr(*fd, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) },
        }
    }
}

/// The attributes of `path` (not following a symlink) that lifeboat keeps, sorted by name.
pub(crate) fn read(path: &Path) -> io::Result<Vec<Xattr>> {
    let c = cpath(path)?;
    read_at(&At::Path(&c))
}

/// The attributes of the open file `file` that lifeboat keeps, sorted by name: [`read`] without
/// looking the path up again.
pub(crate) fn read_file(file: &File) -> io::Result<Vec<Xattr>> {
    read_at(&At::Fd(file.as_raw_fd()))
}

fn read_at(at: &At<'_>) -> io::Result<Vec<Xattr>> {
    let mut names = vec![0u8; 256];
    loop {
        let n = at.list(&mut names);
        if n >= 0 {
            names.truncate(n as usize);
            break;
        }
        let e = io::Error::last_os_error();
        if unsupported(&e) {
            return Ok(Vec::new());
        }
        if e.raw_os_error() != Some(libc::ERANGE) || names.len() >= 1 << 20 {
            return Err(e);
        }
        names.resize(names.len() * 4, 0);
    }
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty() && wanted(n)) {
        let cname = CString::new(name).map_err(io::Error::other)?;
        if let Some(value) = get(at, &cname)? {
            out.push((name.to_vec(), value));
        }
    }
    out.sort();
    Ok(out)
}

/// One attribute's value; `None` if it vanished since it was listed.
fn get(at: &At<'_>, name: &CStr) -> io::Result<Option<Vec<u8>>> {
    let mut value = vec![0u8; 256];
    loop {
        let n = at.get(name, &mut value);
        if n >= 0 {
            value.truncate(n as usize);
            return Ok(Some(value));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENODATA) => return Ok(None),
            Some(libc::ERANGE) if value.len() < 1 << 20 => value.resize(value.len() * 4, 0),
            _ => return Err(e),
        }
    }
}

/// Sets one attribute on `path` without following a symlink.
pub(crate) fn set(path: &Path, name: &[u8], value: &[u8]) -> io::Result<()> {
    let c = cpath(path)?;
    let cname = CString::new(name).map_err(|_| io::Error::other("the name holds a NUL byte"))?;
    // SAFETY: both strings are NUL-terminated and `value` is readable for its length.
    let rc = unsafe { libc::lsetxattr(c.as_ptr(), cname.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Sets one attribute on the open file `file`.
pub(crate) fn set_file(file: &File, name: &[u8], value: &[u8]) -> io::Result<()> {
    let cname = CString::new(name).map_err(|_| io::Error::other("the name holds a NUL byte"))?;
    // SAFETY: the descriptor is open, the name NUL-terminated, `value` readable for its length.
    let rc = unsafe { libc::fsetxattr(file.as_raw_fd(), cname.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Removes one attribute of `path` (not following a symlink), or of the open file `file` when
/// given; an attribute already gone is fine.
pub(crate) fn remove(path: &Path, file: Option<&File>, name: &[u8]) -> io::Result<()> {
    let cname = CString::new(name).map_err(|_| io::Error::other("the name holds a NUL byte"))?;
    let rc = match file {
        // SAFETY: the descriptor is open and the name NUL-terminated.
        Some(f) => unsafe { libc::fremovexattr(f.as_raw_fd(), cname.as_ptr()) },
        None => {
            let c = cpath(path)?;
            // SAFETY: both strings are NUL-terminated.
            unsafe { libc::lremovexattr(c.as_ptr(), cname.as_ptr()) }
        }
    };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ENODATA) { Ok(()) } else { Err(e) }
}

/// Removes ACLs that a new directory inherited from its parent's default ACL, so that what is
/// extracted into it gets exactly the ACLs of the archive.
pub(crate) fn strip_inherited_acls(dir: &Path) {
    if let Ok(c) = cpath(dir) {
        for name in [c"system.posix_acl_default", c"system.posix_acl_access"] {
            // SAFETY: both strings are NUL-terminated. Failure (no ACL, no ACL support) is fine.
            unsafe { libc::lremovexattr(c.as_ptr(), name.as_ptr()) };
        }
    }
}

/// `%` and `=` cannot appear in a PAX keyword as such; GNU tar writes them `%25` and `%3D`.
fn encode_name(name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len());
    for b in name {
        match b {
            b'%' => out.extend_from_slice(b"%25"),
            b'=' => out.extend_from_slice(b"%3D"),
            _ => out.push(*b),
        }
    }
    out
}

fn decode_name(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len());
    let mut i = 0;
    while i < key.len() {
        let code = key.get(i + 1..i + 3).map(|c| c.to_ascii_uppercase());
        match (key[i], code.as_deref()) {
            (b'%', Some(b"25")) => {
                out.push(b'%');
                i += 3;
            }
            (b'%', Some(b"3D")) => {
                out.push(b'=');
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// Adds the PAX records for `xattrs`: the attributes, then the ACLs as text (last: the tar crate's
/// own parser stops at the first value holding a newline).
pub(crate) fn add_records(xattrs: &[Xattr], pax: &mut PaxBuf) {
    for (name, value) in xattrs {
        let mut key = XATTR_PREFIX.to_vec();
        key.extend_from_slice(&encode_name(name));
        pax.record(&key, value);
    }
    for (name, key) in [(ACL_ACCESS, &b"SCHILY.acl.access"[..]), (ACL_DEFAULT, b"SCHILY.acl.default")] {
        if let Some((_, value)) = xattrs.iter().find(|(n, _)| n == name)
            && let Some(text) = acl_to_text(value)
        {
            pax.record(key, text.as_bytes());
        }
    }
}

/// The attributes to restore from an entry's PAX records, and the ones that cannot be (name,
/// reason). A text ACL is used only when the archive lacks the raw attribute (GNU tar `--acls`
/// without `--xattrs`).
pub(crate) fn from_records(records: &[Record<'_>]) -> (Vec<Xattr>, Refused) {
    let mut out: Vec<Xattr> = Vec::new();
    let mut refused = Vec::new();
    for (key, value) in records {
        if let Some(name) = key.strip_prefix(XATTR_PREFIX) {
            let name = decode_name(name);
            if wanted(&name) {
                out.push((name, value.to_vec()));
            } else {
                refused.push((
                    String::from_utf8_lossy(&name).into_owned(),
                    "lifeboat restores only user.*, trusted.*, security.* attributes and POSIX ACLs".to_string(),
                ));
            }
        }
    }
    for (key, name) in [(&b"SCHILY.acl.access"[..], ACL_ACCESS), (b"SCHILY.acl.default", ACL_DEFAULT)] {
        let Some((_, text)) = records.iter().find(|(k, _)| k == &key) else { continue };
        if out.iter().any(|(n, _)| n == name) {
            continue;
        }
        match acl_from_text(text) {
            Ok(value) => out.push((name.to_vec(), value)),
            Err(why) => refused.push((String::from_utf8_lossy(name).into_owned(), why)),
        }
    }
    (out, refused)
}

// The binary ACL format of the `system.posix_acl_*` attributes: a u32 version 2, then entries of
// u16 tag, u16 permissions, u32 id, little endian.
const ACL_VERSION: u32 = 2;
const TAG_USER_OBJ: u16 = 0x01;
const TAG_USER: u16 = 0x02;
const TAG_GROUP_OBJ: u16 = 0x04;
const TAG_GROUP: u16 = 0x08;
const TAG_MASK: u16 = 0x10;
const TAG_OTHER: u16 = 0x20;
const NO_ID: u32 = u32::MAX;

/// The long text form of a binary ACL, with numeric ids (`user:1000:rwx`), one entry per line;
/// `None` if the value is not a well-formed ACL.
pub(crate) fn acl_to_text(value: &[u8]) -> Option<String> {
    if value.len() < 4 || !(value.len() - 4).is_multiple_of(8) {
        return None;
    }
    if u32::from_le_bytes(value[..4].try_into().ok()?) != ACL_VERSION {
        return None;
    }
    let mut text = String::new();
    for e in value[4..].chunks_exact(8) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        let perm = u16::from_le_bytes([e[2], e[3]]);
        let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
        let head = match tag {
            TAG_USER_OBJ => "user::".to_string(),
            TAG_USER => format!("user:{id}:"),
            TAG_GROUP_OBJ => "group::".to_string(),
            TAG_GROUP => format!("group:{id}:"),
            TAG_MASK => "mask::".to_string(),
            TAG_OTHER => "other::".to_string(),
            _ => return None,
        };
        text.push_str(&head);
        text.push(if perm & 4 != 0 { 'r' } else { '-' });
        text.push(if perm & 2 != 0 { 'w' } else { '-' });
        text.push(if perm & 1 != 0 { 'x' } else { '-' });
        text.push('\n');
    }
    Some(text)
}

/// The binary form of a text ACL (long or short form, names or numeric ids, `#` comments).
pub(crate) fn acl_from_text(text: &[u8]) -> Result<Vec<u8>, String> {
    let text = std::str::from_utf8(text).map_err(|_| "its text ACL is not UTF-8".to_string())?;
    let mut entries: Vec<(u16, u32, u16)> = Vec::new();
    for line in text.split(['\n', ',']) {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let bad = || format!("its text ACL entry {line:?} cannot be read");
        let parts: Vec<&str> = line.split(':').collect();
        let (tag_word, qualifier, perms) = match parts.as_slice() {
            [t, q, p] => (*t, *q, *p),
            [t, p] => (*t, "", *p),
            _ => return Err(bad()),
        };
        let named = !qualifier.is_empty();
        let (tag, id) = match (tag_word, named) {
            ("user" | "u", false) => (TAG_USER_OBJ, NO_ID),
            ("user" | "u", true) => (TAG_USER, lookup_id(qualifier, true).ok_or_else(bad)?),
            ("group" | "g", false) => (TAG_GROUP_OBJ, NO_ID),
            ("group" | "g", true) => (TAG_GROUP, lookup_id(qualifier, false).ok_or_else(bad)?),
            ("mask" | "m", false) => (TAG_MASK, NO_ID),
            ("other" | "o", false) => (TAG_OTHER, NO_ID),
            _ => return Err(bad()),
        };
        let mut perm = 0u16;
        for ch in perms.trim().chars() {
            perm |= match ch {
                'r' => 4,
                'w' => 2,
                'x' => 1,
                '-' => 0,
                _ => return Err(bad()),
            };
        }
        entries.push((tag, id, perm));
    }
    if entries.is_empty() {
        return Err("its text ACL is empty".into());
    }
    // The kernel wants the entries ordered by tag, then id.
    entries.sort();
    let mut out = ACL_VERSION.to_le_bytes().to_vec();
    for (tag, id, perm) in entries {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    Ok(out)
}

/// A user or group id from a name in the local databases, or from digits.
fn lookup_id(q: &str, user: bool) -> Option<u32> {
    let c = CString::new(q).ok()?;
    let mut buf = vec![0u8; 16 * 1024];
    let found = if user {
        // SAFETY: the out-pointers point to live locals and `buf` is writable for its length.
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut res: *mut libc::passwd = std::ptr::null_mut();
        let rc = unsafe { libc::getpwnam_r(c.as_ptr(), &mut pw, buf.as_mut_ptr().cast(), buf.len(), &mut res) };
        (rc == 0 && !res.is_null()).then_some(pw.pw_uid)
    } else {
        // SAFETY: as above.
        let mut gr: libc::group = unsafe { std::mem::zeroed() };
        let mut res: *mut libc::group = std::ptr::null_mut();
        let rc = unsafe { libc::getgrnam_r(c.as_ptr(), &mut gr, buf.as_mut_ptr().cast(), buf.len(), &mut res) };
        (rc == 0 && !res.is_null()).then_some(gr.gr_gid)
    };
    found.or_else(|| q.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acl_text_round_trips_and_sorts() {
        let text = b"user::rw-\ngroup:100:r--\nuser:1000:rwx\ngroup::r--\nmask::rwx\nother::r--\n";
        let bin = acl_from_text(text).unwrap();
        assert_eq!(
            acl_to_text(&bin).unwrap(),
            "user::rw-\nuser:1000:rwx\ngroup::r--\ngroup:100:r--\nmask::rwx\nother::r--\n"
        );
        assert!(acl_from_text(b"user:nobody-such-user-xyz:rwx\n").is_err());
        assert!(acl_from_text(b"bogus\n").is_err());
        assert!(acl_to_text(b"\x02\0\0\0\x01").is_none());
    }

    #[test]
    fn names_are_encoded_like_gnu_tar() {
        assert_eq!(encode_name(b"user.a=b%c"), b"user.a%3Db%25c");
        assert_eq!(decode_name(b"user.a%3db%25c%zz"), b"user.a=b%c%zz");
    }
}
