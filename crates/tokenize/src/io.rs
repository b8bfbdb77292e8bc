//! Reading a whole file that may be gzipped (sniffed from its first bytes, so
//! `tokenizer.json.gz` and `tokenizer.json` load the same way).

use crate::error::TokenizeError;
use std::io::Read;
use std::path::Path;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The bytes of `path`, decompressed when it starts with the gzip magic.
pub(crate) fn read_all(path: &Path) -> Result<Vec<u8>, TokenizeError> {
    let raw = std::fs::read(path).map_err(|e| TokenizeError::io(path, e))?;
    if !raw.starts_with(&GZIP_MAGIC) {
        return Ok(raw);
    }
    let mut out = Vec::with_capacity(raw.len() * 4);
    flate2::read::MultiGzDecoder::new(raw.as_slice())
        .read_to_end(&mut out)
        .map_err(|e| TokenizeError::io(path, e))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn plain_and_gzipped_files_read_the_same() {
        let dir = std::env::temp_dir().join(format!("kvroute-tokenize-io-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let plain = dir.join("a.json");
        std::fs::write(&plain, b"{\"x\": 1}").unwrap();
        let gz = dir.join("a.json.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(b"{\"x\": 1}").unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        assert_eq!(read_all(&plain).unwrap(), read_all(&gz).unwrap());
        let missing = read_all(&dir.join("missing")).unwrap_err();
        assert!(matches!(missing, TokenizeError::Io { .. }), "{missing}");
    }
}
