//! The record encoding: one format version byte, then the value in bincode 2's standard
//! configuration (serde path), capped at [`MAX_RECORD_BYTES`].
//!
//! Every value the journal stores (events, catalog entries, settings) goes through [`encode`] and
//! [`decode`]. Decoding treats its input as untrusted: a wrong version byte, a truncated or
//! oversized record, an unknown enum tag, invalid UTF-8 or trailing bytes are all a
//! [`DecodeError`], never a panic, and the size cap bounds what a decode can allocate.

use bincode::config::{Configuration, Limit, LittleEndian, Varint};
use lifeboat_machine::Event;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The version byte written first in every record this build writes.
pub const RECORD_VERSION: u8 = 1;

/// The largest record (after the version byte) that is encoded or decoded: 1 MiB. An event is a
/// few hundred bytes; the cap exists so that a corrupt length prefix cannot make a decode allocate
/// without bound.
pub const MAX_RECORD_BYTES: usize = 1 << 20;

type Config = Configuration<LittleEndian, Varint, Limit<MAX_RECORD_BYTES>>;

fn config() -> Config {
    bincode::config::standard().with_limit::<MAX_RECORD_BYTES>()
}

/// A record that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The record has no bytes at all, not even a version byte.
    #[error("empty record")]
    Empty,
    /// The version byte names a record format this build does not know.
    #[error("record format version {found} is not supported (this build reads version {RECORD_VERSION})")]
    UnsupportedVersion { found: u8 },
    /// bincode rejected the bytes after the version byte.
    #[error("malformed record: {0}")]
    Malformed(String),
    /// The value decoded but bytes were left over after it.
    #[error("{extra} trailing bytes after the record")]
    TrailingBytes { extra: usize },
}

/// A value that could not be encoded (in practice: larger than [`MAX_RECORD_BYTES`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot encode the record: {0}")]
pub struct EncodeError(String);

/// Encodes a value as a record: the version byte, then bincode.
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, EncodeError> {
    let body = bincode::serde::encode_to_vec(value, config()).map_err(|e| EncodeError(e.to_string()))?;
    if body.len() > MAX_RECORD_BYTES {
        return Err(EncodeError(format!("{} bytes is over the limit of {MAX_RECORD_BYTES}", body.len())));
    }
    let mut record = Vec::with_capacity(body.len() + 1);
    record.push(RECORD_VERSION);
    record.extend_from_slice(&body);
    Ok(record)
}

/// Decodes a record written by [`encode`]. Rejects trailing bytes.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if version != RECORD_VERSION {
        return Err(DecodeError::UnsupportedVersion { found: version });
    }
    let (value, used) =
        bincode::serde::decode_from_slice::<T, _>(body, config()).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if used != body.len() {
        return Err(DecodeError::TrailingBytes { extra: body.len() - used });
    }
    Ok(value)
}

/// Encodes one journal event as it is stored: a version byte, then bincode.
pub fn encode_event(event: &Event) -> Result<Vec<u8>, EncodeError> {
    encode(event)
}

/// Decodes one stored journal event. Safe on arbitrary bytes: errors, never panics, and allocates
/// at most about [`MAX_RECORD_BYTES`].
pub fn decode_event(bytes: &[u8]) -> Result<Event, DecodeError> {
    decode(bytes)
}
