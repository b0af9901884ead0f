//! Encryption at rest with age (X25519 recipients): copies are encrypted on the way out, so the
//! remote only ever holds `.age` files, and decrypted only by whoever holds an identity file.

use std::io::BufReader;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use crate::RemoteError;

/// How a remote's copies are stored.
#[derive(Clone)]
pub enum Encryption {
    /// Encrypted to these recipients: any of their identities decrypts.
    Age(Arc<Vec<Box<dyn age::Recipient + Send + Sync>>>),
    /// Stored as they are (`encrypt = false`, said explicitly in the configuration).
    None,
}

impl std::fmt::Debug for Encryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Encryption::Age(recipients) => write!(f, "Age({} recipient(s))", recipients.len()),
            Encryption::None => f.write_str("None"),
        }
    }
}

impl Encryption {
    /// Parses recipients (at least one): X25519 (`age1...`, what `age-keygen` makes) or
    /// post-quantum (`age1pq1...`, `age-keygen -pq`). One file cannot mix the two kinds.
    pub fn to_recipients(recipients: &[String]) -> Result<Encryption, RemoteError> {
        if recipients.is_empty() {
            return Err(RemoteError::Key("encrypt_to lists no recipient: give one or more age1... keys".into()));
        }
        let parsed = recipients
            .iter()
            .map(|r| -> Result<Box<dyn age::Recipient + Send + Sync>, RemoteError> {
                let r = r.trim();
                let bad = |e: &dyn std::fmt::Display| RemoteError::Key(format!("{r:?} is not an age recipient: {e}"));
                if r.starts_with("age1pq1") {
                    Ok(Box::new(age::pq::Recipient::from_str(r).map_err(|e| bad(&e))?))
                } else {
                    // Classic X25519, deprecated by age 0.13 in favour of post-quantum keys; it is
                    // what age 1.1 and rage make, so it stays the common case.
                    #[allow(deprecated)]
                    let recipient = age::x25519::Recipient::from_str(r).map_err(|e| bad(&e))?;
                    Ok(Box::new(recipient))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Encryption::Age(Arc::new(parsed)))
    }

    /// `age` or `none`, as the copy's metadata says.
    pub fn name(&self) -> &'static str {
        match self {
            Encryption::Age(_) => "age",
            Encryption::None => "none",
        }
    }

    /// The extension a copy's key gets: `.age` or nothing.
    pub fn extension(&self) -> &'static str {
        match self {
            Encryption::Age(_) => ".age",
            Encryption::None => "",
        }
    }

    /// A small document (a copy's manifest) encrypted whole, or as it is for `Encryption::None`.
    pub fn seal(&self, bytes: &[u8]) -> Result<Vec<u8>, RemoteError> {
        use std::io::Write;
        let mut writer = self.wrap(Vec::new()).map_err(|e| RemoteError::Key(format!("cannot encrypt: {e}")))?;
        writer.write_all(bytes).map_err(|e| RemoteError::Key(format!("cannot encrypt: {e}")))?;
        writer.finish_into().map_err(|e| RemoteError::Key(format!("cannot encrypt: {e}")))
    }

    /// Wraps `out` in an age writer, or returns it as it is.
    pub(crate) fn wrap<W: std::io::Write + Send + 'static>(&self, out: W) -> std::io::Result<Box<dyn FinishWrite<W>>> {
        match self {
            Encryption::Age(recipients) => {
                let encryptor =
                    age::Encryptor::with_recipients(recipients.iter().map(|r| r.as_ref() as &dyn age::Recipient))
                        .map_err(std::io::Error::other)?;
                Ok(Box::new(encryptor.wrap_output(out)?))
            }
            Encryption::None => Ok(Box::new(Plain(out))),
        }
    }
}

/// A writer that must be finished (age writes its last chunk and tag then).
pub(crate) trait FinishWrite<W>: std::io::Write + Send {
    fn finish_into(self: Box<Self>) -> std::io::Result<W>;
}

impl<W: std::io::Write + Send> FinishWrite<W> for age::stream::StreamWriter<W> {
    fn finish_into(self: Box<Self>) -> std::io::Result<W> {
        (*self).finish()
    }
}

struct Plain<W>(W);

impl<W: std::io::Write> std::io::Write for Plain<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl<W: std::io::Write + Send> FinishWrite<W> for Plain<W> {
    fn finish_into(self: Box<Self>) -> std::io::Result<W> {
        Ok(self.0)
    }
}

/// The identities that decrypt copies (an age identity file: `AGE-SECRET-KEY-1...` lines).
#[derive(Clone)]
pub struct Identities(Arc<Vec<Box<dyn age::Identity + Send + Sync>>>);

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identities({})", self.0.len())
    }
}

impl Identities {
    /// Reads an identity file, refusing one that others may read (it is a secret key).
    pub fn from_file(path: &Path) -> Result<Identities, RemoteError> {
        let fail = |detail: String| RemoteError::Credentials { path: path.into(), detail };
        let file = std::fs::File::open(path).map_err(|e| fail(format!("cannot open it: {e}")))?;
        check_private(path, &file)?;
        let parsed = age::IdentityFile::from_buffer(BufReader::new(file))
            .map_err(|e| fail(format!("not an age identity file: {e}")))?
            .into_identities()
            .map_err(|e| fail(format!("not an age identity file: {e}")))?;
        if parsed.is_empty() {
            return Err(fail("it holds no identity (AGE-SECRET-KEY-1... lines)".into()));
        }
        Ok(Identities(Arc::new(parsed)))
    }

    /// Identities from their text (`AGE-SECRET-KEY-1...` lines), for tests and tools.
    pub fn from_text(text: &str) -> Result<Identities, RemoteError> {
        let parsed = age::IdentityFile::from_buffer(text.as_bytes())
            .and_then(|f| f.into_identities().map_err(std::io::Error::other))
            .map_err(|e| RemoteError::Key(format!("not an age identity: {e}")))?;
        Ok(Identities(Arc::new(parsed)))
    }

    /// A small age document (a copy's manifest) decrypted whole; `what` names it in the error.
    pub fn open(&self, bytes: &[u8], what: &str) -> Result<Vec<u8>, RemoteError> {
        use std::io::Read;
        let fail = |detail: String| RemoteError::Key(format!("cannot decrypt {what}: {detail}"));
        let decryptor = age::Decryptor::new(bytes).map_err(|e| fail(format!("not a valid age file: {e}")))?;
        let mut reader = decryptor.decrypt(self.iter()).map_err(|e| fail(e.to_string()))?;
        let mut out = Vec::new();
        reader.read_to_end(&mut out).map_err(|e| fail(e.to_string()))?;
        Ok(out)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &dyn age::Identity> {
        self.0.iter().map(|i| i.as_ref() as &dyn age::Identity)
    }
}

/// A new X25519 identity: (`AGE-SECRET-KEY-1...`, its `age1...` recipient).
pub fn generate_identity() -> (String, String) {
    use age::secrecy::ExposeSecret;
    #[allow(deprecated)]
    let identity = age::x25519::Identity::generate();
    (identity.to_string().expose_secret().to_string(), identity.to_public().to_string())
}

/// Refuses a file of secrets that its group or others may read or write.
pub(crate) fn check_private(path: &Path, file: &std::fs::File) -> Result<(), RemoteError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = file
        .metadata()
        .map_err(|e| RemoteError::Credentials { path: path.into(), detail: format!("cannot stat it: {e}") })?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(RemoteError::Credentials {
            path: path.into(),
            detail: format!("it is readable by others (mode {:o}): chmod 600 it", mode & 0o777),
        });
    }
    Ok(())
}
