//! Reading a CHAP secret from a file, and refusing a file others can read.
//!
//! Refused rather than warned about, as ssh refuses a private key whose
//! file is "too open": a warning goes to a log nobody reads while the
//! secret stays readable, and a refusal at `mpio config check` (or at the
//! one-shot command) stops the deployment where the fix is one command.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The bytes of the secret file at `path`, or what is wrong and the fix.
/// The mode is read from the opened file, so it is the file that was read.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, String> {
    let shown = path.display();
    let cannot = |e: std::io::Error| {
        format!("cannot read {shown}: {e}; check the path, and that the daemon's user (root) can read the file")
    };
    let mut file = std::fs::File::open(path).map_err(cannot)?;
    let meta = file.metadata().map_err(cannot)?;
    if !meta.is_file() {
        return Err(format!("{shown} is not a regular file; give the path of the file that holds the secret"));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{shown} is readable or writable by group or others (mode {mode:04o}): a CHAP secret must be private \
             to its owner; run chmod 600 {shown}"
        ));
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(cannot)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn only_a_file_private_to_its_owner_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s");
        std::fs::write(&f, "0123456789abcdef").unwrap();
        for (mode, ok) in [(0o600, true), (0o400, true), (0o640, false), (0o604, false), (0o620, false), (0o644, false)]
        {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
            match read(&f) {
                Ok(b) => assert!(ok, "mode {mode:o} was accepted ({} bytes read)", b.len()),
                Err(e) => {
                    assert!(!ok, "mode {mode:o} was refused: {e}");
                    assert!(
                        e.contains(&format!("chmod 600 {}", f.display())) && e.contains(&format!("{mode:04o}")),
                        "{e}"
                    );
                    assert!(!e.contains("0123456789abcdef"), "the secret was printed: {e}");
                }
            }
        }
        let e = read(dir.path()).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
        let e = read(&dir.path().join("missing")).unwrap_err();
        assert!(e.contains("check the path"), "{e}");
    }
}
