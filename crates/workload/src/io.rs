//! Reading dataset files: transparent gzip, and a record stream that is either
//! JSON Lines or the elements of one top-level JSON array, each record tagged
//! with its 1-based line number for error messages.
//!
//! Nothing here loads a whole file: JSONL is read line by line and a JSON array
//! is split into elements by a small brace/string scanner, so a 14 MB gzipped
//! ShareGPT dump costs one record of memory at a time.

use crate::error::WorkloadError;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// A boxed buffered reader that can cross threads.
pub(crate) type DynRead = Box<dyn BufRead + Send>;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const UTF8_BOM: &[u8] = b"\xef\xbb\xbf";

/// Open `path`, decompressing on the fly when it starts with the gzip magic
/// (whatever its extension).
pub(crate) fn open(path: &Path) -> Result<DynRead, WorkloadError> {
    let file = File::open(path).map_err(|e| WorkloadError::io(path, e))?;
    let mut raw = BufReader::with_capacity(64 * 1024, file);
    let head = raw.fill_buf().map_err(|e| WorkloadError::io(path, e))?;
    if head.starts_with(&GZIP_MAGIC) {
        let gz = flate2::read::MultiGzDecoder::new(raw);
        Ok(Box::new(BufReader::with_capacity(64 * 1024, gz)))
    } else {
        Ok(Box::new(raw))
    }
}

/// Read a whole (possibly gzipped) file into memory. For small inputs only
/// (configs, tokenizers, the RAG corpus).
pub(crate) fn read_all(path: &Path) -> Result<Vec<u8>, WorkloadError> {
    let mut out = Vec::new();
    open(path)?
        .read_to_end(&mut out)
        .map_err(|e| WorkloadError::io(path, e))?;
    Ok(out)
}

/// One record: its 1-based starting line and its raw bytes.
pub(crate) type Record = (u64, Vec<u8>);

/// JSON records from a file that is either JSON Lines or one JSON array.
pub(crate) struct JsonRecords {
    path: PathBuf,
    reader: DynRead,
    /// Lines consumed so far (the next byte is on line `line + 1` for JSONL;
    /// for arrays, the current line number is `line + 1` as well).
    line: u64,
    mode: Mode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Lines,
    /// Inside a top-level array; `started` once its `[` has been consumed.
    Array {
        started: bool,
    },
    Done,
}

impl std::fmt::Debug for JsonRecords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonRecords")
            .field("path", &self.path)
            .field("line", &self.line)
            .field("mode", &self.mode)
            .finish()
    }
}

impl JsonRecords {
    /// Open `path` and sniff its shape: a first non-blank byte of `[` means a
    /// JSON array, anything else JSON Lines.
    pub(crate) fn open(path: &Path) -> Result<JsonRecords, WorkloadError> {
        let mut reader = open(path)?;
        let head = reader.fill_buf().map_err(|e| WorkloadError::io(path, e))?;
        let first = head
            .strip_prefix(UTF8_BOM)
            .unwrap_or(head)
            .iter()
            .find(|b| !b.is_ascii_whitespace());
        let mode = match first {
            Some(b'[') => Mode::Array { started: false },
            _ => Mode::Lines,
        };
        Ok(JsonRecords {
            path: path.to_path_buf(),
            reader,
            line: 0,
            mode,
        })
    }

    /// The file being read.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn next_line(&mut self) -> Option<Result<Record, WorkloadError>> {
        loop {
            let mut buf = Vec::new();
            match self.reader.read_until(b'\n', &mut buf) {
                Ok(0) => {
                    self.mode = Mode::Done;
                    return None;
                }
                Ok(_) => {
                    self.line += 1;
                    if self.line == 1 && buf.starts_with(UTF8_BOM) {
                        buf.drain(..UTF8_BOM.len());
                    }
                    if buf.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    return Some(Ok((self.line, buf)));
                }
                Err(e) => {
                    self.mode = Mode::Done;
                    return Some(Err(WorkloadError::io(&self.path, e)));
                }
            }
        }
    }

    fn byte(&mut self) -> io::Result<Option<u8>> {
        let b = match self.reader.fill_buf()?.first() {
            Some(&b) => b,
            None => return Ok(None),
        };
        self.reader.consume(1);
        if b == b'\n' {
            self.line += 1;
        }
        Ok(Some(b))
    }

    fn peek(&mut self) -> io::Result<Option<u8>> {
        Ok(self.reader.fill_buf()?.first().copied())
    }

    /// Skip whitespace (and, between elements, commas); return the next
    /// significant byte without consuming it.
    fn skip_blank(&mut self, commas: bool) -> io::Result<Option<u8>> {
        while let Some(b) = self.peek()? {
            if b.is_ascii_whitespace() || (commas && b == b',') {
                self.byte()?;
            } else {
                return Ok(Some(b));
            }
        }
        Ok(None)
    }

    fn next_element(&mut self) -> Result<Option<Record>, WorkloadError> {
        let io_err = |s: &Self, e| WorkloadError::io(&s.path, e);
        if self.mode == (Mode::Array { started: false }) {
            if self.peek().map_err(|e| io_err(self, e))? == Some(0xef) {
                // A UTF-8 byte-order mark (checked by `open`).
                for _ in 0..3 {
                    self.byte().map_err(|e| io_err(self, e))?;
                }
            }
            match self.skip_blank(false).map_err(|e| io_err(self, e))? {
                Some(b'[') => {
                    self.byte().map_err(|e| io_err(self, e))?;
                    self.mode = Mode::Array { started: true };
                }
                _ => {
                    return Err(WorkloadError::parse(
                        &self.path,
                        self.line + 1,
                        "expected `[`",
                    ))
                }
            }
        }
        match self.skip_blank(true).map_err(|e| io_err(self, e))? {
            None => {
                return Err(WorkloadError::parse(
                    &self.path,
                    self.line + 1,
                    "unexpected end of file inside the top-level JSON array (missing `]`)",
                ))
            }
            Some(b']') => {
                self.mode = Mode::Done;
                return Ok(None);
            }
            Some(_) => {}
        }
        let start_line = self.line + 1;
        let mut out = Vec::new();
        let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
        loop {
            let b = match self.peek().map_err(|e| io_err(self, e))? {
                Some(b) => b,
                None => {
                    return Err(WorkloadError::parse(
                        &self.path,
                        start_line,
                        "unexpected end of file inside an array element",
                    ))
                }
            };
            if in_string {
                if escaped {
                    escaped = false;
                } else if b == b'\\' {
                    escaped = true;
                } else if b == b'"' {
                    in_string = false;
                }
            } else {
                match b {
                    b'"' => in_string = true,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' if depth > 0 => depth -= 1,
                    // A scalar element (or a stray `]`) ends at depth 0.
                    b',' | b']' if depth == 0 => break,
                    _ => {}
                }
            }
            out.push(b);
            self.byte().map_err(|e| io_err(self, e))?;
            if depth == 0 && !in_string && matches!(b, b'}' | b']') {
                break;
            }
        }
        Ok(Some((start_line, out)))
    }
}

impl Iterator for JsonRecords {
    type Item = Result<Record, WorkloadError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.mode {
            Mode::Done => None,
            Mode::Lines => self.next_line(),
            Mode::Array { .. } => match self.next_element() {
                Ok(rec) => rec.map(Ok),
                Err(e) => {
                    self.mode = Mode::Done;
                    Some(Err(e))
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn tmp(name: &str, bytes: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kvroute-workload-io-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn records(p: &Path) -> Vec<(u64, String)> {
        JsonRecords::open(p)
            .unwrap()
            .map(|r| {
                let (l, b) = r.unwrap();
                (l, String::from_utf8(b).unwrap().trim().to_string())
            })
            .collect()
    }

    #[test]
    fn jsonl_skips_blank_lines_and_counts_them() {
        let p = tmp("a.jsonl", b"{\"a\":1}\n\n  \n{\"a\":2}\n");
        assert_eq!(
            records(&p),
            vec![(1, "{\"a\":1}".into()), (4, "{\"a\":2}".into())]
        );
    }

    #[test]
    fn a_byte_order_mark_is_ignored() {
        let p = tmp("bom.jsonl", b"\xef\xbb\xbf{\"a\":1}\n");
        assert_eq!(records(&p), vec![(1, "{\"a\":1}".into())]);
        let p = tmp("bom.json", b"\xef\xbb\xbf [{\"a\":1}]");
        assert_eq!(records(&p), vec![(1, "{\"a\":1}".into())]);
    }

    #[test]
    fn gzip_is_sniffed_not_named() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(b"{\"x\":\"y\"}\n").unwrap();
        let p = tmp("plain-name.jsonl", &gz.finish().unwrap());
        assert_eq!(records(&p), vec![(1, "{\"x\":\"y\"}".into())]);
    }

    #[test]
    fn array_elements_with_tricky_strings() {
        let text = b"[\n {\"v\": \"a ] } , [ \\\" {\"},\n {\"v\": [1, {\"w\": 2}]} ,\n 3\n]\n";
        let p = tmp("arr.json", text);
        assert_eq!(
            records(&p),
            vec![
                (2, "{\"v\": \"a ] } , [ \\\" {\"}".into()),
                (3, "{\"v\": [1, {\"w\": 2}]}".into()),
                (4, "3".into()),
            ]
        );
    }

    #[test]
    fn truncated_array_is_an_error_with_a_line() {
        let p = tmp("trunc.json", b"[\n{\"a\": 1},\n{\"a\": ");
        let got: Vec<_> = JsonRecords::open(&p).unwrap().collect();
        assert_eq!(got.len(), 2);
        assert!(got[0].is_ok());
        let err = got[1].as_ref().unwrap_err().to_string();
        assert!(
            err.ends_with("trunc.json:3: unexpected end of file inside an array element"),
            "{err}"
        );
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = JsonRecords::open(Path::new("/nonexistent/x.jsonl"))
            .err()
            .unwrap();
        assert!(
            err.to_string().starts_with("/nonexistent/x.jsonl: "),
            "{err}"
        );
    }
}
