//! Reading the files the daemon is given — the configuration, the web configuration, TLS
//! certificates and keys, password files, the state files — so that none of them can stall
//! or exhaust it: each is opened without blocking (a FIFO would hold the open, or the first
//! read, until a writer came), refused unless it is a regular file (`/dev/zero` never ends),
//! and read up to a size. And the TLS client configuration built from such files.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// What a small file the daemon reads may hold at most: a configuration, a certificate chain,
/// a key, a password.
pub const MAX_SMALL_FILE: u64 = 1 << 20;

/// `path` opened for reading if it is a regular file. The open does not block, and does not
/// make a terminal the daemon's.
pub fn open_regular(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        let what = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() {
            "a character device"
        } else if kind.is_block_device() {
            "a block device"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what}, not a regular file"),
        ));
    }
    Ok(file)
}

/// The bytes of the regular file `path`, if it holds at most `max`.
pub fn read_capped(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let file = open_regular(path)?;
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {max} bytes"),
        ));
    }
    Ok(bytes)
}

/// The text of the regular file `path`, if it holds at most `max` bytes of UTF-8.
pub fn read_text(path: &Path, max: u64) -> io::Result<String> {
    String::from_utf8(read_capped(path, max)?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// A rustls client configuration for a server (a broker, a remote-write receiver): the CA in
/// `ca_file` (or the system's), and a client certificate and key if given, all read as small
/// files are.
pub(crate) fn tls_client(
    ca_file: Option<&Path>,
    client_cert: Option<(&Path, &Path)>,
) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let ca_path = ca_file.unwrap_or(Path::new("/etc/ssl/certs/ca-certificates.crt"));
    let mut roots = rustls::RootCertStore::empty();
    let read = |path: &Path| {
        read_capped(path, MAX_SMALL_FILE)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(ca_path)?)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            format!(
                "cannot read the CA certificates in {}: {e}",
                ca_path.display()
            )
        })?;
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!("no CA certificate in {}", ca_path.display()));
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    match client_cert {
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(cert)?)
                .collect::<Result<_, _>>()
                .map_err(|e| format!("{}: {e}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_slice(&read(key)?)
                .map_err(|e| format!("{}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("the client certificate and key do not go together: {e}"))
        }
        None => Ok(builder.with_no_client_auth()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_of_bounded_size_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "abc").unwrap();
        assert_eq!(read_text(&file, 3).unwrap(), "abc");
        assert!(read_text(&file, 2)
            .unwrap_err()
            .to_string()
            .contains("larger than 2"));
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // Returns at once, with no writer on the FIFO.
        assert!(read_text(&fifo, 10)
            .unwrap_err()
            .to_string()
            .contains("FIFO"));
        let zero = read_capped(Path::new("/dev/zero"), 10).unwrap_err();
        assert!(zero.to_string().contains("character device"), "{zero}");
        let dir_error = read_capped(dir.path(), 10).unwrap_err();
        assert!(dir_error.to_string().contains("directory"), "{dir_error}");
    }
}
