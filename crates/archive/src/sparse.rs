//! Sparse files: finding the holes when writing, re-creating them when reading.
//!
//! The format is GNU tar's PAX sparse format 1.0, what `tar --sparse --format=posix` writes
//! (docs/security.md): a PAX header with `GNU.sparse.major=1`, `GNU.sparse.minor=0`,
//! `GNU.sparse.name` (the real name) and `GNU.sparse.realsize`, then a regular ustar entry named
//! `DIR/GNUSparseFile.0/NAME` whose data is the map (the region count, then each region's offset
//! and length, as decimal lines, NUL-padded to 512 bytes) followed by the data regions back to
//! back. A tar that knows no sparse files extracts that entry as a plain file under the stand-in
//! name; GNU tar and lifeboat re-create the holes. The same PAX header carries the file's other
//! records (sub-second mtime, attributes, ACLs; see `pax` and `xattr`): a member has one.
//!
//! For the reader such a member is one tar entry (the stand-in), its map at the start of its
//! data; the sparse keys are read from the raw PAX records that `pax::Sniffer` keeps, not with
//! the tar crate's parser, which loses every record after a value holding a newline.
//!
//! Reading also accepts the PAX sparse formats 0.0 and 0.1 (map in the header). The old GNU
//! format (type `S`) is expanded by the tar crate itself.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;

use tar::{EntryType, Header};

use crate::pax::Record;

/// One run of data in a sparse file; everything between runs is a hole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Region {
    pub offset: u64,
    pub len: u64,
}

impl Region {
    fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// Past this many data regions the writer merges neighbours (storing the holes between them as
/// zeros), so that the map stays under a few MiB whatever the file.
const MAX_WRITE_REGIONS: usize = 1 << 16;
/// A longer map is refused when reading, so a hostile archive cannot make the map take much memory.
const MAX_READ_REGIONS: u64 = 1 << 20;

/// A file with holes, ready to be written as a sparse entry: the map, then each region.
pub(crate) struct Sparse {
    regions: Vec<Region>,
    map: Vec<u8>,
    data: u64,
    map_pos: usize,
    idx: usize,
    done: u64,
    apparent: u64,
}

fn lseek(file: &File, offset: u64, whence: i32) -> io::Result<Option<u64>> {
    let off = i64::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: plain syscall on an open descriptor.
    let rc = unsafe { libc::lseek(file.as_raw_fd(), off, whence) };
    if rc >= 0 {
        return Ok(Some(rc as u64));
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ENXIO) { Ok(None) } else { Err(e) }
}

/// Finds the data regions of `file` (`size` bytes) with `SEEK_DATA`/`SEEK_HOLE`. `None` when the
/// file has no hole, or the filesystem cannot tell: it is then stored as a plain entry. No system
/// call when the file has as many blocks as bytes (`blocks`, st_blocks in 512-byte units, as GNU
/// tar tells a sparse file), else one `lseek` for a file without holes. The file offset is back
/// at 0 afterwards.
pub(crate) fn scan(file: &File, size: u64, blocks: u64) -> io::Result<Option<Sparse>> {
    if blocks.saturating_mul(512) >= size {
        // A hole would leave fewer blocks than bytes. Blocks allocated past the end (fallocate
        // with KEEP_SIZE) can hide one: such a file is stored whole, its holes as zeros, which
        // costs space and loses nothing.
        return Ok(None);
    }
    let regions = scan_regions(file, size);
    let mut f = file;
    f.seek(SeekFrom::Start(0))?;
    Ok(regions?.map(|r| Sparse::new(r, size)))
}

/// The data regions of `file` (`size` bytes), or `None` when it has no hole or the filesystem
/// cannot tell. Moves the file offset.
pub(crate) fn scan_regions(file: &File, size: u64) -> io::Result<Option<Vec<Region>>> {
    if size == 0 {
        return Ok(None);
    }
    let first_hole = match lseek(file, 0, libc::SEEK_HOLE) {
        Ok(Some(h)) => h,
        Ok(None) => return Ok(None),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::EOPNOTSUPP)) => return Ok(None),
        Err(e) => return Err(e),
    };
    if first_hole >= size {
        return Ok(None);
    }
    let mut regions = Vec::new();
    let mut pos = 0;
    while pos < size {
        let Some(start) = lseek(file, pos, libc::SEEK_DATA)? else { break };
        if start >= size {
            break;
        }
        let end = lseek(file, start, libc::SEEK_HOLE)?.unwrap_or(size).min(size);
        if end <= start {
            break;
        }
        regions.push(Region { offset: start, len: end - start });
        pos = end;
        if regions.len() >= MAX_WRITE_REGIONS {
            regions = regions
                .chunks(2)
                .map(|c| Region { offset: c[0].offset, len: c[c.len() - 1].end() - c[0].offset })
                .collect();
        }
    }
    Ok(Some(regions))
}

impl Sparse {
    fn new(mut regions: Vec<Region>, size: u64) -> Sparse {
        let data = regions.iter().map(|r| r.len).sum();
        // As GNU tar does: a file that ends in a hole gets a last, empty region at its end.
        if regions.last().is_none_or(|r| r.end() < size) {
            regions.push(Region { offset: size, len: 0 });
        }
        let mut map = Vec::with_capacity(16 + regions.len() * 16);
        let _ = writeln!(map, "{}", regions.len());
        for r in &regions {
            let _ = write!(map, "{}\n{}\n", r.offset, r.len);
        }
        map.resize(map.len().div_ceil(512) * 512, 0);
        Sparse { regions, map, data, map_pos: 0, idx: 0, done: 0, apparent: 0 }
    }

    /// Bytes of data, holes left out.
    pub fn data_bytes(&self) -> u64 {
        self.data
    }

    /// Bytes the tar entry holds: the padded map and the data.
    pub fn stored_bytes(&self) -> u64 {
        self.map.len() as u64 + self.data
    }

    /// How far into the file the data read so far reaches.
    pub fn apparent(&self) -> u64 {
        self.apparent
    }

    /// Reads the next bytes of the entry (the map, then each region, with `pread`). Returns how
    /// many, and how far the file position advanced (holes skipped included); zero bytes means
    /// the file ended early.
    pub fn read(&mut self, file: &File, buf: &mut [u8]) -> io::Result<(usize, u64)> {
        if self.map_pos < self.map.len() {
            let n = buf.len().min(self.map.len() - self.map_pos);
            buf[..n].copy_from_slice(&self.map[self.map_pos..self.map_pos + n]);
            self.map_pos += n;
            return Ok((n, 0));
        }
        while self.idx < self.regions.len() && self.done == self.regions[self.idx].len {
            self.idx += 1;
            self.done = 0;
        }
        let Some(r) = self.regions.get(self.idx) else { return Ok((0, 0)) };
        let at = r.offset + self.done;
        let want = buf.len().min(usize::try_from(r.len - self.done).unwrap_or(usize::MAX));
        let n = file.read_at(&mut buf[..want], at)?;
        self.done += n as u64;
        let advanced = (at + n as u64).saturating_sub(self.apparent);
        self.apparent = self.apparent.max(at + n as u64);
        Ok((n, advanced))
    }
}

/// Appends a sparse file: its PAX header, then the entry. `header` is the plain header the file
/// would have had (size = apparent size); `body` must yield exactly `stored` bytes. `extra` holds
/// more PAX records for the same member (see [`pax_record`] and `pax::PaxBuf`): one member may
/// have only one PAX header.
pub(crate) fn append<W: Write>(
    builder: &mut tar::Builder<W>,
    header: &Header,
    name: &Path,
    stored: u64,
    extra: &[u8],
    body: &mut dyn Read,
) -> io::Result<()> {
    let realsize = header.size()?;
    let name = name.as_os_str().as_bytes();
    let mut records = Vec::new();
    pax_record(&mut records, "GNU.sparse.major", b"1");
    pax_record(&mut records, "GNU.sparse.minor", b"0");
    pax_record(&mut records, "GNU.sparse.name", name);
    pax_record(&mut records, "GNU.sparse.realsize", realsize.to_string().as_bytes());
    records.extend_from_slice(extra);
    let mut x = stand_in(header, name, "PaxHeaders")?;
    x.set_entry_type(EntryType::XHeader);
    x.set_size(records.len() as u64);
    x.set_cksum();
    builder.append(&x, &records[..])?;
    let mut h = stand_in(header, name, "GNUSparseFile.0")?;
    h.set_entry_type(EntryType::Regular);
    h.set_size(stored);
    h.set_cksum();
    builder.append(&h, body)
}

/// A ustar header with `header`'s metadata and the stand-in name `DIR/TAG/BASE` GNU tar uses
/// (fixed `.0` instead of its pid, so the output is deterministic), shortened if it does not fit.
fn stand_in(header: &Header, name: &[u8], tag: &str) -> io::Result<Header> {
    let mut h = Header::new_ustar();
    h.set_mode(header.mode()?);
    h.set_uid(header.uid()?);
    h.set_gid(header.gid()?);
    h.set_mtime(header.mtime()?);
    let (dir, base) = match name.iter().rposition(|b| *b == b'/') {
        Some(i) => (&name[..i], &name[i + 1..]),
        None => (&b""[..], name),
    };
    let mut full = Vec::with_capacity(name.len() + tag.len() + 2);
    if !dir.is_empty() {
        full.extend_from_slice(dir);
        full.push(b'/');
    }
    full.extend_from_slice(tag.as_bytes());
    full.push(b'/');
    full.extend_from_slice(base);
    if h.set_path(Path::new(OsStr::from_bytes(&full))).is_err() {
        let mut short = format!("{tag}/").into_bytes();
        short.extend_from_slice(&base[..base.len().min(80)]);
        h.set_path(Path::new(OsStr::from_bytes(&short)))?;
    }
    Ok(h)
}

/// One PAX record: `LEN KEY=VALUE\n`, where LEN counts the whole record, itself included.
pub(crate) fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let rest = key.len() + value.len() + 3;
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    out.extend_from_slice(format!("{len} {key}=").as_bytes());
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// What an entry's PAX header says about a sparse file.
pub(crate) struct SparseHeader {
    /// The real name (`GNU.sparse.name`), if given.
    pub name: Option<Vec<u8>>,
    realsize: u64,
    /// The map from the header (formats 0.0 and 0.1); `None` for 1.0 (map in the data).
    listed: Option<Vec<Region>>,
}

/// Reads the sparse keys among a regular entry's PAX `records` (parsed raw, see `pax`):
/// `Ok(None)` when there are none. The error says what is wrong, to be prefixed with the entry's
/// name.
pub(crate) fn detect(kind: EntryType, records: &[Record<'_>]) -> Result<Option<SparseHeader>, String> {
    if !matches!(kind, EntryType::Regular | EntryType::Continuous) {
        return Ok(None);
    }
    let (mut any, mut major, mut minor, mut name, mut realsize, mut map) = (false, None, None, None, None, None);
    let mut listed = Vec::new();
    let mut offset = None;
    for (key, v) in records {
        let Some(field) = key.strip_prefix(b"GNU.sparse.") else { continue };
        any = true;
        match field {
            b"major" => major = Some(number(v)?),
            b"minor" => minor = Some(number(v)?),
            b"name" => name = Some(v.to_vec()),
            b"realsize" | b"size" => realsize = Some(number(v)?),
            b"map" => map = Some(v.to_vec()),
            b"offset" => offset = Some(number(v)?),
            b"numbytes" => {
                let at = offset.take().ok_or("has a sparse length without an offset")?;
                if listed.len() as u64 >= MAX_READ_REGIONS {
                    return Err(format!("has a sparse map of more than {MAX_READ_REGIONS} regions"));
                }
                listed.push(Region { offset: at, len: number(v)? });
            }
            _ => {}
        }
    }
    if !any {
        return Ok(None);
    }
    let realsize = realsize.ok_or("is a sparse file without a real size")?;
    let listed = match (major, minor) {
        (Some(1), Some(0)) => None,
        (None | Some(0), _) => Some(match map {
            Some(m) => parse_listed(&m)?,
            None => listed,
        }),
        (ma, mi) => {
            let show = |v: Option<u64>| v.map_or("?".to_string(), |v| v.to_string());
            return Err(format!("uses GNU sparse format {}.{}, which lifeboat does not read", show(ma), show(mi)));
        }
    };
    Ok(Some(SparseHeader { name, realsize, listed }))
}

fn number(v: &[u8]) -> Result<u64, String> {
    let s = std::str::from_utf8(v).ok().filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()));
    s.and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("has a bad number {:?} in its sparse header", String::from_utf8_lossy(v)))
}

/// The 0.1 map: `offset,length,offset,length...`.
fn parse_listed(map: &[u8]) -> Result<Vec<Region>, String> {
    if map.is_empty() {
        return Ok(Vec::new());
    }
    let nums: Vec<&[u8]> = map.split(|b| *b == b',').collect();
    if !nums.len().is_multiple_of(2) {
        return Err("has a sparse map with an odd number of values".into());
    }
    if (nums.len() / 2) as u64 > MAX_READ_REGIONS {
        return Err(format!("has a sparse map of more than {MAX_READ_REGIONS} regions"));
    }
    nums.chunks(2).map(|c| Ok(Region { offset: number(c[0])?, len: number(c[1])? })).collect()
}

/// A sparse entry's map, checked: where each data region goes, and the file's real size.
#[derive(Debug)]
pub(crate) struct SparseMap {
    pub realsize: u64,
    pub regions: Vec<Region>,
    /// Bytes of data in the entry (the sum of the region lengths).
    pub data: u64,
}

/// Why a sparse map could not be read.
pub(crate) enum MapError {
    /// Reading the entry failed (classify it like any read error).
    Read(io::Error),
    /// The map is malformed; the text says how.
    Invalid(String),
}

/// Reads the map (for format 1.0 from the start of the entry's data, leaving `data` at the first
/// region) and checks it: regions in order, not overlapping, inside the real size, and exactly as
/// much data as the entry holds (`entry_size`), so a hostile map cannot desynchronise the stream.
pub(crate) fn read_map<R: Read>(hdr: SparseHeader, data: &mut R, entry_size: u64) -> Result<SparseMap, MapError> {
    let (regions, stored) = match hdr.listed {
        Some(regions) => (regions, entry_size),
        None => {
            let (regions, used) = read_map_blocks(data, entry_size)?;
            (regions, entry_size - used)
        }
    };
    let mut end = 0u64;
    let mut total = 0u64;
    for r in &regions {
        if r.offset < end {
            return Err(MapError::Invalid("has sparse regions out of order or overlapping".into()));
        }
        end = r.offset.checked_add(r.len).filter(|e| *e <= hdr.realsize).ok_or_else(|| {
            MapError::Invalid(format!("has a sparse region past its real size of {} bytes", hdr.realsize))
        })?;
        total += r.len;
    }
    if total != stored {
        return Err(MapError::Invalid(format!(
            "has a sparse map describing {total} bytes of data, but the entry holds {stored}"
        )));
    }
    Ok(SparseMap { realsize: hdr.realsize, regions, data: total })
}

/// Parses the 1.0 map, block by block; returns the regions and the bytes the map took.
fn read_map_blocks<R: Read>(data: &mut R, entry_size: u64) -> Result<(Vec<Region>, u64), MapError> {
    let bad = |s: &str| MapError::Invalid(s.to_string());
    let mut block = [0u8; 512];
    let mut used = 0u64;
    let mut count: Option<u64> = None;
    let mut pending: Option<u64> = None;
    let (mut cur, mut digits) = (0u64, 0usize);
    let mut regions = Vec::new();
    loop {
        if used + 512 > entry_size {
            return Err(bad("has a sparse map that runs past the end of the entry"));
        }
        data.read_exact(&mut block).map_err(MapError::Read)?;
        used += 512;
        for &b in &block {
            match b {
                b'0'..=b'9' => {
                    digits += 1;
                    cur = cur
                        .checked_mul(10)
                        .and_then(|c| c.checked_add(u64::from(b - b'0')))
                        .ok_or_else(|| bad("has a number too large in its sparse map"))?;
                }
                b'\n' if digits > 0 => {
                    let n = cur;
                    (cur, digits) = (0, 0);
                    match (count, pending) {
                        (None, _) if n > MAX_READ_REGIONS => {
                            return Err(MapError::Invalid(format!(
                                "has a sparse map of more than {MAX_READ_REGIONS} regions"
                            )));
                        }
                        (None, _) => count = Some(n),
                        (Some(_), None) => pending = Some(n),
                        (Some(_), Some(at)) => {
                            regions.push(Region { offset: at, len: n });
                            pending = None;
                        }
                    }
                    if count == Some(regions.len() as u64) {
                        return Ok((regions, used));
                    }
                }
                _ => return Err(bad("has a malformed sparse map")),
            }
        }
    }
}

/// The whole content of a sparse file: zeros for the holes, the entry's data for the regions.
pub(crate) struct Expand<R> {
    map: SparseMap,
    idx: usize,
    pos: u64,
    data: R,
}

impl<R: Read> Expand<R> {
    pub fn new(map: SparseMap, data: R) -> Self {
        Expand { map, idx: 0, pos: 0, data }
    }
}

impl<R: Read> Read for Expand<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let cap = |n: u64| buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
        loop {
            let (zeros, region_end) = match self.map.regions.get(self.idx) {
                Some(r) if self.pos < r.offset => (r.offset - self.pos, 0),
                Some(r) if self.pos < r.end() => (0, r.end()),
                Some(_) => {
                    self.idx += 1;
                    continue;
                }
                None => (self.map.realsize - self.pos, 0),
            };
            if zeros > 0 {
                let n = cap(zeros);
                buf[..n].fill(0);
                self.pos += n as u64;
                return Ok(n);
            }
            if region_end == 0 {
                return Ok(0);
            }
            let n = cap(region_end - self.pos);
            let n = self.data.read(&mut buf[..n])?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "sparse entry data ends early"));
            }
            self.pos += n as u64;
            return Ok(n);
        }
    }
}

/// Why writing a sparse file out failed.
pub(crate) enum RestoreError {
    /// Reading the entry.
    Read(io::Error),
    /// Writing the file.
    Write(io::Error),
}

/// Writes each region of `map` at its offset in `file` (new and empty), then sets the real size:
/// the holes stay holes.
pub(crate) fn restore<R: Read>(map: &SparseMap, data: &mut R, file: &File, buf: &mut [u8]) -> Result<(), RestoreError> {
    for r in &map.regions {
        let mut at = r.offset;
        while at < r.end() {
            let want = buf.len().min(usize::try_from(r.end() - at).unwrap_or(usize::MAX));
            let n = data.read(&mut buf[..want]).map_err(RestoreError::Read)?;
            if n == 0 {
                let e = io::Error::new(io::ErrorKind::UnexpectedEof, "sparse entry data ends early");
                return Err(RestoreError::Read(e));
            }
            file.write_all_at(&buf[..n], at).map_err(RestoreError::Write)?;
            at += n as u64;
        }
    }
    file.set_len(map.realsize).map_err(RestoreError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_lengths_count_themselves() {
        for (k, v, want) in [
            ("GNU.sparse.major", "1", "22 GNU.sparse.major=1\n"),
            ("GNU.sparse.name", "f", "21 GNU.sparse.name=f\n"),
            ("GNU.sparse.realsize", "10485760", "32 GNU.sparse.realsize=10485760\n"),
            ("k", "1234567", "13 k=1234567\n"),
        ] {
            let mut out = Vec::new();
            pax_record(&mut out, k, v.as_bytes());
            assert_eq!(String::from_utf8(out).unwrap(), want);
        }
        // Where the length gains a digit by counting itself: 98 bytes plus "101".
        let mut out = Vec::new();
        pax_record(&mut out, "k", &[b'v'; 94]);
        assert_eq!(out.len(), 101);
        assert!(out.starts_with(b"101 k=v"));
    }

    fn map_of(text: &[u8], realsize: u64, entry_size: u64) -> Result<SparseMap, String> {
        let mut data = text.to_vec();
        data.resize(data.len().div_ceil(512) * 512, 0);
        let hdr = SparseHeader { name: None, realsize, listed: None };
        read_map(hdr, &mut &data[..], entry_size).map_err(|e| match e {
            MapError::Read(e) => format!("read: {e}"),
            MapError::Invalid(s) => s,
        })
    }

    #[test]
    fn hostile_maps_are_refused() {
        let mut endless = b"999\n".to_vec();
        while endless.len() < 512 {
            endless.extend_from_slice(b"1\n");
        }
        let ok = map_of(b"2\n0\n5\n100\n5\n", 200, 512 + 10).unwrap();
        assert_eq!(ok.regions, vec![Region { offset: 0, len: 5 }, Region { offset: 100, len: 5 }]);
        assert_eq!(ok.data, 10);
        for (text, realsize, size, needle) in [
            (&b"2\n0\n5\n100\n5\n"[..], 200, 512 + 11, "describing 10 bytes"),
            (b"2\n100\n5\n0\n5\n", 200, 522, "out of order"),
            (b"1\n18446744073709551615\n5\n", u64::MAX, 517, "past its real size"),
            (b"1\n99999999999999999999999\n", 200, 512, "too large"),
            (b"99999999\n", 200, 512, "more than"),
            (b"1\n0x\n", 200, 512, "malformed"),
            (b"3\n0\n5\n", 200, 512, "malformed"),
            (&endless[..512], 200, 512, "runs past the end"),
        ] {
            let err = map_of(text, realsize, size).unwrap_err();
            assert!(err.contains(needle), "{err:?} lacks {needle:?}");
        }
    }

    #[test]
    fn expand_fills_holes_with_zeros() {
        let map = SparseMap {
            realsize: 10,
            regions: vec![Region { offset: 2, len: 2 }, Region { offset: 6, len: 1 }],
            data: 3,
        };
        let mut out = Vec::new();
        Expand::new(map, &b"abc"[..]).read_to_end(&mut out).unwrap();
        assert_eq!(out, b"\0\0ab\0\0c\0\0\0");
    }
}
