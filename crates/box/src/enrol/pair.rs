//! The box's own key and certificate chain as a pair: installed key first, then chain, the
//! previous good pair kept whole in one file beside the key, and served instead of a pair that
//! a power cut between the two renames, or damage, left unusable.
use super::{install_err, EnrolError};
use boxapi_core::files::{self, limit, read_limited};
use boxapi_core::tls::{self, Identity};
use std::path::{Path, PathBuf};

/// `<server.key>.prev-pair`: the previous good key followed by its chain, PEM, mode 0600. One
/// file, replaced by one rename, so it is never half a pair.
pub fn previous_path(key_path: &Path) -> PathBuf {
    let mut name = key_path.file_name().unwrap_or_default().to_os_string();
    name.push(".prev-pair");
    files::parent(key_path).join(name)
}

/// The installed pair's PEM (key, chain), when both read and make a server identity.
fn good_pair(key_path: &Path, cert_path: &Path) -> Option<(Vec<u8>, Vec<u8>)> {
    let key = read_limited(key_path, limit::PEM).ok()?;
    let chain = read_limited(cert_path, limit::PEM).ok()?;
    tls::from_pem(&chain, &key).ok()?;
    Some((key, chain))
}

/// Installs a key and its certificate chain as a pair. The pair in place, when it is a good one,
/// is kept first as the previous pair ([`previous_path`]); a damaged one is not, and the previous
/// pair stays. Both new files are then written out in full (a full disk or an unwritable
/// directory fails here, and nothing changes) and renamed into place, the key first. A failure
/// after the key's rename puts the old key back; a power cut there leaves a key that does not fit
/// the chain, and the daemon serves the previous pair ([`fallback`]) until the next renewal.
pub(crate) fn install(
    key_path: &Path,
    key_pem: &[u8],
    cert_path: &Path,
    cert_pem: &[u8],
) -> Result<(), EnrolError> {
    let key = files::stage(key_path, key_pem, 0o600).map_err(install_err)?;
    let cert = files::stage(cert_path, cert_pem, 0o644).map_err(install_err)?;
    let old = good_pair(key_path, cert_path);
    if let Some((old_key, old_chain)) = &old {
        let both = [old_key.as_slice(), old_chain.as_slice()].concat();
        files::write_atomic(&previous_path(key_path), &both, 0o600).map_err(install_err)?;
    }
    let old_key = old
        .map(|(k, _)| k)
        .or_else(|| read_limited(key_path, limit::PEM).ok());
    key.rename().map_err(install_err)?;
    if let Err(e) = cert.rename() {
        if let Some(old) = old_key {
            let _ = files::write_atomic(key_path, &old, 0o600);
        }
        return Err(install_err(e));
    }
    // The pair is in place and in use: a directory that cannot be synced does not undo that, so
    // it is not an install failure (the next sync makes it durable).
    let _ = files::sync_parent(key_path);
    let _ = files::sync_parent(cert_path);
    Ok(())
}

/// The previous good pair, when the installed one cannot be served: its identity and the file
/// it came from. `None` when there is none or it does not make an identity either.
pub fn fallback(key_path: &Path) -> Option<(Identity, PathBuf)> {
    let path = previous_path(key_path);
    // A key and a chain: twice a PEM file's limit.
    let both = read_limited(&path, 2 * limit::PEM).ok()?;
    // Each parser takes the blocks of its kind: the chain its CERTIFICATEs, the key its key.
    let identity = tls::from_pem(&both, &both).ok()?;
    Some((identity, path))
}

/// What `ctl status` lists in `warnings` while the box serves the previous pair.
pub const DAMAGED_WARNING: &str = "certificate_damaged";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_that_cannot_be_written_whole_changes_nothing() {
        let dir = std::env::temp_dir().join(format!("boxapi-install-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
        std::fs::write(&key, "old key").unwrap();
        std::fs::write(&cert, "old cert").unwrap();
        // The certificate's staging file cannot be made (as a full disk or a read-only
        // directory would have it, even for root): the key must not change either.
        let elsewhere = dir.join("missing/cert.pem");
        let e = install(&key, b"new key", &elsewhere, b"new cert").unwrap_err();
        assert!(e.to_string().contains("cert.pem"), "{e}");
        assert_eq!(std::fs::read(&key).unwrap(), b"old key");
        assert_eq!(std::fs::read(&cert).unwrap(), b"old cert");
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["cert.pem", "key.pem"], "no staging file left");
        install(&key, b"new key", &cert, b"new cert").unwrap();
        assert_eq!(std::fs::read(&key).unwrap(), b"new key");
        assert_eq!(std::fs::read(&cert).unwrap(), b"new cert");
        // The key is private, the chain public, whatever the old files were.
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(&key), mode(&cert)), (0o600, 0o644));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A self-signed pair (key PEM, chain PEM) for `name`.
    #[cfg(feature = "demo")]
    fn pair(name: &'static str) -> (Vec<u8>, Vec<u8>) {
        use crate::demo::x509::{issue, CertSpec};
        let key = super::super::csr::EcKey::generate().unwrap();
        let now = boxapi_core::time::unix_now() as i64;
        let names = [name];
        let spec = CertSpec {
            common_name: name,
            is_ca: false,
            dns_names: &names,
            ips: &[],
            not_before: now - 60,
            not_after: now + 86_400,
        };
        let der = issue(&spec, &key, &key, name).unwrap();
        (
            boxapi_core::cert::pem("PRIVATE KEY", &key.pkcs8).into_bytes(),
            boxapi_core::cert::pem("CERTIFICATE", &der).into_bytes(),
        )
    }

    /// Issue 21: a power cut between the key's rename and the chain's (new key, old chain), or a
    /// damaged chain, must not leave the box without a certificate: the pair in place at each
    /// install is kept whole, and served instead.
    #[cfg(feature = "demo")]
    #[test]
    fn each_install_keeps_the_good_pair_it_replaces() {
        let dir = std::env::temp_dir().join(format!("boxapi-pair-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
        let one = pair("one.box.test");
        let two = pair("two.box.test");
        let three = pair("three.box.test");
        install(&key, &one.0, &cert, &one.1).unwrap();
        assert!(fallback(&key).is_none(), "nothing was there before");
        install(&key, &two.0, &cert, &two.1).unwrap();
        let leaf = |id: &Identity| id.not_after;
        let (id, from) = fallback(&key).unwrap();
        assert_eq!(from, dir.join("key.pem.prev-pair"));
        let prev = std::fs::read(&from).unwrap();
        assert_eq!(prev, [one.0.as_slice(), one.1.as_slice()].concat());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&from).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "it holds a private key");
        assert!(leaf(&id).is_some());
        // The cut: three's key in place, two's chain still there.
        install(&key, &three.0, &cert, &three.1).unwrap();
        std::fs::write(&cert, &two.1).unwrap();
        assert!(good_pair(&key, &cert).is_none(), "the key does not fit");
        let prev = std::fs::read(previous_path(&key)).unwrap();
        assert_eq!(prev, [two.0.as_slice(), two.1.as_slice()].concat());
        assert!(fallback(&key).is_some());
        // An install over a damaged pair keeps the good previous one, not the damage.
        std::fs::write(&cert, &three.1[..three.1.len() / 2]).unwrap();
        install(&key, &one.0, &cert, &one.1).unwrap();
        assert_eq!(std::fs::read(previous_path(&key)).unwrap(), prev);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
