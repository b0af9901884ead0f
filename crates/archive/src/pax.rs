//! PAX extended headers: what the writer adds before an entry (sub-second mtime, extended
//! attributes, ACLs), and how the extractor gets them back.
//!
//! Reading cannot go through the tar crate's own PAX parser: it splits the records on newlines,
//! so a value holding a newline (every text ACL GNU tar writes, many binary attribute values) hides
//! that record and all the records after it. Instead [`Sniffer`] watches the decompressed stream
//! under the tar reader, walks the same headers, and keeps the raw PAX data of the entry it
//! precedes; the extractor checks that both walks agree on where each entry starts.

use std::io::{self, Write};

use tar::{EntryType, Header};

/// The largest PAX data kept for one entry. Attribute values are at most 64 KiB each in Linux.
pub(crate) const MAX_PAX: u64 = 8 << 20;

/// PAX records being built for one entry.
#[derive(Default)]
pub(crate) struct PaxBuf {
    data: Vec<u8>,
}

impl PaxBuf {
    /// Adds one `LEN KEY=VALUE\n` record; LEN counts the whole record, its own digits included.
    pub fn record(&mut self, key: &[u8], value: &[u8]) {
        let rest = key.len() + value.len() + 3;
        let mut digits = 1;
        while digits + rest >= 10usize.pow(digits as u32) {
            digits += 1;
        }
        let _ = write!(self.data, "{} ", rest + digits);
        self.data.extend_from_slice(key);
        self.data.push(b'=');
        self.data.extend_from_slice(value);
        self.data.push(b'\n');
    }

    /// The records, `LEN KEY=VALUE\n` each, as they go in a PAX header's data.
    pub fn as_bytes(&self) -> &[u8] {
        &self.data
    }

    /// Appends the records as a PAX `x` entry (nothing if there are none).
    pub fn append<W: Write>(&self, builder: &mut tar::Builder<W>, mtime: u64) -> io::Result<()> {
        if self.data.is_empty() {
            return Ok(());
        }
        let mut header = Header::new_ustar();
        // A fixed name keeps the stream deterministic; readers ignore it.
        let name = b"././@PaxHeader";
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        header.set_entry_type(EntryType::XHeader);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(mtime);
        header.set_size(self.data.len() as u64);
        header.set_cksum();
        builder.append(&header, self.data.as_slice())
    }
}

/// The PAX `mtime` value: seconds, and the fraction without trailing zeros (as GNU tar writes it).
pub(crate) fn mtime_value(secs: u64, nsec: u32) -> String {
    if nsec == 0 {
        return secs.to_string();
    }
    let frac = format!("{nsec:09}");
    format!("{secs}.{}", frac.trim_end_matches('0'))
}

/// Parses a PAX `mtime` value; `None` for negative or malformed times (the header's seconds are
/// used then).
pub(crate) fn parse_mtime(value: &[u8]) -> Option<(u64, u32)> {
    let s = std::str::from_utf8(value).ok()?;
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: u64 = secs.parse().ok()?;
    let mut nsec = 0u32;
    for (i, b) in frac.bytes().take(9).enumerate() {
        nsec += u32::from(b - b'0') * 10u32.pow(8 - i as u32);
    }
    Some((secs, nsec))
}

/// One PAX record: key and value.
pub(crate) type Record<'a> = (&'a [u8], &'a [u8]);

/// Splits PAX data into (key, value) records, honouring each record's length (values may hold
/// newlines). `Err` names what is malformed.
pub(crate) fn parse_records(data: &[u8]) -> Result<Vec<Record<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let space = rest.iter().position(|b| *b == b' ').ok_or("a PAX record has no length")?;
        let len: usize = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("a PAX record has a malformed length")?;
        if len <= space + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err("a PAX record's length does not match its content".into());
        }
        let kv = &rest[space + 1..len - 1];
        let eq = kv.iter().position(|b| *b == b'=').ok_or("a PAX record has no `=`")?;
        out.push((&kv[..eq], &kv[eq + 1..]));
        rest = &rest[len..];
    }
    Ok(out)
}

enum State {
    /// Assembling a 512-byte header.
    Header,
    /// Assembling GNU sparse extension blocks after a sparse header.
    SparseExt,
    /// Passing over entry data (and padding) up to the next header.
    Data,
    /// The end-of-archive block was seen (or a header that the tar reader rejects anyway).
    Done,
}

/// What the sniffer found in front of the last entry: its header position and PAX data.
pub(crate) enum Found {
    None,
    Pax(Vec<u8>),
    TooLarge,
}

/// Walks the tar headers of the decompressed stream as the tar reader consumes it (see the module
/// documentation), keeping the PAX `x` data that precedes each entry.
pub(crate) struct Sniffer {
    pos: u64,
    state: State,
    block: Vec<u8>,
    block_start: u64,
    /// Data and padding bytes still to pass in `State::Data`.
    skip: u64,
    /// Unpadded data bytes of an `x` entry still to capture.
    capture_left: u64,
    capture: Option<Vec<u8>>,
    too_large: bool,
    pending: Option<Found>,
    pending_size: Option<u64>,
    last: Option<(u64, Found)>,
}

impl Default for Sniffer {
    fn default() -> Self {
        Sniffer {
            pos: 0,
            state: State::Header,
            block: Vec::with_capacity(512),
            block_start: 0,
            skip: 0,
            capture_left: 0,
            capture: None,
            too_large: false,
            pending: None,
            pending_size: None,
            last: None,
        }
    }
}

/// The `size` record as the tar crate reads it (its parser stops at the first record it cannot
/// read), so that both walks skip the same number of bytes.
fn tar_reader_size(data: &[u8]) -> Option<u64> {
    for ext in tar::PaxExtensions::new(data) {
        let ext = ext.ok()?;
        if ext.key_bytes() == b"size" {
            return ext.value().ok()?.parse().ok();
        }
    }
    None
}

fn round_up(n: u64) -> u64 {
    n.saturating_add(511) & !511
}

/// A header's size field, read as the tar crate reads it (octal, or base-256 when the top bit is
/// set); `None` when it would fail there too.
fn size_field(h: &[u8]) -> Option<u64> {
    let f = &h[124..136];
    if f[0] & 0x80 != 0 {
        return Some(f[4..].iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)));
    }
    let end = f.iter().position(|b| *b == 0).unwrap_or(f.len());
    u64::from_str_radix(std::str::from_utf8(&f[..end]).ok()?.trim(), 8).ok()
}

impl Sniffer {
    /// Feeds the bytes the tar reader just read.
    pub fn observe(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match self.state {
                State::Done => {
                    self.pos += data.len() as u64;
                    return;
                }
                State::Header | State::SparseExt => {
                    if self.block.is_empty() {
                        self.block_start = self.pos;
                    }
                    let n = (512 - self.block.len()).min(data.len());
                    self.block.extend_from_slice(&data[..n]);
                    self.pos += n as u64;
                    data = &data[n..];
                    if self.block.len() == 512 {
                        if matches!(self.state, State::Header) {
                            self.header();
                        } else if self.block[504] != 1 {
                            self.state = State::Data;
                        }
                        self.block.clear();
                    }
                }
                State::Data => {
                    let n = usize::try_from(self.skip).unwrap_or(usize::MAX).min(data.len());
                    if self.capture_left > 0 {
                        let c = usize::try_from(self.capture_left).unwrap_or(usize::MAX).min(n);
                        if let Some(buf) = self.capture.as_mut() {
                            buf.extend_from_slice(&data[..c]);
                        }
                        self.capture_left -= c as u64;
                    }
                    self.skip -= n as u64;
                    self.pos += n as u64;
                    data = &data[n..];
                    if self.skip == 0 {
                        self.data_done();
                    }
                }
            }
        }
    }

    fn data_done(&mut self) {
        if let Some(buf) = self.capture.take() {
            // The tar reader gives the next entry the size of a PAX `size` record, found with its
            // own parser; this walk must do exactly the same to stay in step.
            self.pending_size = tar_reader_size(&buf);
            self.pending = Some(Found::Pax(buf));
        } else if self.too_large {
            self.too_large = false;
            self.pending = Some(Found::TooLarge);
        }
        self.state = State::Header;
    }

    fn header(&mut self) {
        let h = &self.block;
        if h.iter().all(|b| *b == 0) {
            self.state = State::Done;
            return;
        }
        let kind = h[156];
        let magic = &h[257..265];
        let gnu = magic == b"ustar  \0";
        let recognized = gnu || magic == b"ustar\x0000";
        let extension = matches!(kind, b'L' | b'K' | b'x' | b'g');
        let Some(mut size) = size_field(h) else {
            self.state = State::Done;
            return;
        };
        if !extension && let Some(s) = self.pending_size.take() {
            size = s;
        }
        let sparse_ext = kind == b'S' && gnu && h[482] == 1;
        if recognized && kind == b'x' {
            self.pending_size = None;
            if size <= MAX_PAX {
                self.capture = Some(Vec::with_capacity(size as usize));
                self.capture_left = size;
            } else {
                self.too_large = true;
            }
        } else if !(recognized && matches!(kind, b'L' | b'K')) {
            // An entry the tar reader yields: the PAX data read so far belongs to it.
            let found = self.pending.take().unwrap_or(Found::None);
            self.last = Some((self.block_start, found));
            self.pending_size = None;
        }
        self.skip = round_up(size);
        self.state = if sparse_ext { State::SparseExt } else { State::Data };
        if self.skip == 0 && !sparse_ext {
            self.data_done();
        }
    }

    /// The PAX data found in front of the entry whose header starts at `header_pos`. `Err` when
    /// this walk and the tar reader's disagree about where that entry starts.
    pub fn take_for(&mut self, header_pos: u64) -> Result<Found, String> {
        match self.last.take() {
            Some((pos, found)) if pos == header_pos => Ok(found),
            _ => Err(format!("its extended headers could not be located (at byte {header_pos} of the tar stream)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_lengths_count_their_own_digits() {
        for n in 0..1200 {
            let mut pax = PaxBuf::default();
            let value = vec![b'v'; n];
            pax.record(b"k", &value);
            let recs = parse_records(&pax.data).unwrap();
            assert_eq!(recs, vec![(&b"k"[..], value.as_slice())], "value of {n} bytes");
        }
    }

    #[test]
    fn mtimes_keep_nanoseconds() {
        assert_eq!(mtime_value(1_700_000_000, 0), "1700000000");
        assert_eq!(mtime_value(1_700_000_000, 120_000_000), "1700000000.12");
        assert_eq!(parse_mtime(b"1700000000.12"), Some((1_700_000_000, 120_000_000)));
        assert_eq!(parse_mtime(b"1796167202.25724433"), Some((1_796_167_202, 257_244_330)));
        assert_eq!(parse_mtime(b"5.1234567891234"), Some((5, 123_456_789)));
        for bad in [&b"-1.5"[..], b"", b".5", b"1.x", b"99999999999999999999999"] {
            assert_eq!(parse_mtime(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn malformed_records_are_errors_not_panics() {
        for bad in [&b"5 a=b"[..], b"x a=b\n", b"3 a\n", b"100 a=b\n", b"1 \n", b"6 ab\n\n", b" ", b"4 =\n"] {
            let _ = parse_records(bad);
        }
        assert!(parse_records(b"6 a=b\n7 c=d\n").is_err());
        assert_eq!(parse_records(b"6 a=\n\n").unwrap(), vec![(&b"a"[..], &b"\n"[..])]);
    }

    #[test]
    fn the_sniffer_follows_any_read_sizes() {
        let mut tar = tar::Builder::new(Vec::new());
        let mut pax = PaxBuf::default();
        pax.record(b"SCHILY.xattr.user.x", b"a\nb");
        pax.append(&mut tar, 0).unwrap();
        let mut h = Header::new_gnu();
        h.set_size(700);
        h.set_entry_type(EntryType::Regular);
        tar.append_data(&mut h, "f", &[7u8; 700][..]).unwrap();
        let mut h = Header::new_gnu();
        h.set_size(0);
        tar.append_data(&mut h, "g", &[][..]).unwrap();
        let bytes = tar.into_inner().unwrap();
        for step in [1, 7, 512, 513] {
            let mut s = Sniffer::default();
            let mut seen = Vec::new();
            for chunk in bytes.chunks(step) {
                s.observe(chunk);
                if let Some((pos, _)) = &s.last
                    && seen.last() != Some(pos)
                {
                    seen.push(*pos);
                }
            }
            // `f` after one PAX header (512 + 512), `g` after `f` and its 700 bytes.
            assert_eq!(seen, vec![1024, 1024 + 512 + 1024], "step {step}");
        }
        let mut s = Sniffer::default();
        s.observe(&bytes[..1024 + 512]);
        assert!(matches!(s.take_for(1024), Ok(Found::Pax(d)) if d.ends_with(b"a\nb\n")));
        assert!(s.take_for(1024).is_err());
    }
}
