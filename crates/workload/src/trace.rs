//! Token-only request traces: [`MooncakeSessions`] and [`AzureSessions`].
//!
//! Neither trace ships text, so prompts are synthetic token ids (no
//! `messages`, `prompt_text: None`) built so that cache behaviour matches the
//! trace:
//!
//! * **Mooncake** (JSONL: `timestamp` ms, `input_length`, `output_length`,
//!   `hash_ids`): each hash id names one 512-token block, and the block's
//!   tokens are a pure function of (id, seed) — see [`mooncake_block`]. Equal
//!   ids therefore give equal tokens (shared KV cache), distinct ids give
//!   unrelated tokens, and the last block is cut so the prompt is exactly
//!   `input_length` tokens.
//! * **Azure LLM inference** (CSV: `TIMESTAMP,ContextTokens,GeneratedTokens`):
//!   every row gets its own `ContextTokens` pseudo-random ids, so nothing is
//!   shared; arrivals are the timestamps relative to the first row.
//!
//! Both are streamed record by record; token ids are drawn below
//! `vocab_size` (pick the tokenizer's base vocabulary so that no id is a
//! special token). Output lengths of 0 become 1 (`max_tokens ≥ 1`), and so
//! does an Azure `ContextTokens` of 0 (an engine rejects an empty prompt).

use crate::error::WorkloadError;
use crate::io::{self, DynRead, JsonRecords};
use crate::request::{Session, Turn};
use crate::rng::{stream, token_of};
use kvroute_core::{mix64, Nanos};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Tokens per Mooncake hash block.
pub const MOONCAKE_BLOCK_TOKENS: usize = 512;

/// Default bound on synthetic token ids: below Qwen3's 151,643 ordinary
/// tokens, so no synthetic id is a special token.
pub const DEFAULT_SYNTHETIC_VOCAB: u32 = 151_000;

/// How Mooncake records become sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MooncakeOptions {
    /// Tokens per hash block. Default 512 (the released traces' block size).
    pub block_tokens: usize,
    /// Token ids are drawn from `0..vocab_size`. Default [`DEFAULT_SYNTHETIC_VOCAB`].
    pub vocab_size: u32,
    /// Salt of the block contents: two runs with the same seed produce the
    /// same tokens for the same hash id.
    pub seed: u64,
    /// Stop after this many requests.
    pub max_requests: Option<usize>,
}

impl Default for MooncakeOptions {
    fn default() -> Self {
        MooncakeOptions {
            block_tokens: MOONCAKE_BLOCK_TOKENS,
            vocab_size: DEFAULT_SYNTHETIC_VOCAB,
            seed: 0,
            max_requests: None,
        }
    }
}

/// The first `len` tokens of Mooncake block `hash_id`, appended to `out`.
/// A pure function of its arguments: the same id always gives the same tokens.
pub fn mooncake_block(hash_id: u64, len: usize, seed: u64, vocab_size: u32, out: &mut Vec<u32>) {
    let key = mix64(mix64(seed ^ stream::MOONCAKE.rotate_left(32)) ^ mix64(hash_id));
    out.extend((0..len as u64).map(|j| token_of(key.wrapping_add(j), vocab_size)));
}

#[derive(Debug, Deserialize)]
struct MooncakeRecord {
    timestamp: f64,
    input_length: usize,
    output_length: u64,
    hash_ids: Vec<u64>,
}

/// Requests of a Mooncake trace; an iterator of `Result<Session, WorkloadError>`.
#[derive(Debug)]
pub struct MooncakeSessions {
    records: JsonRecords,
    options: MooncakeOptions,
    next_id: u64,
}

fn check_vocab(vocab_size: u32) -> Result<(), WorkloadError> {
    if vocab_size == 0 {
        Err(WorkloadError::setting("vocab_size", "must be at least 1"))
    } else {
        Ok(())
    }
}

impl MooncakeSessions {
    /// Open a Mooncake JSONL trace (optionally gzipped).
    pub fn open(
        path: impl AsRef<Path>,
        options: MooncakeOptions,
    ) -> Result<MooncakeSessions, WorkloadError> {
        check_vocab(options.vocab_size)?;
        if options.block_tokens == 0 {
            return Err(WorkloadError::setting("block_tokens", "must be at least 1"));
        }
        Ok(MooncakeSessions {
            records: JsonRecords::open(path.as_ref())?,
            options,
            next_id: 0,
        })
    }

    fn convert(&self, line: u64, bytes: &[u8]) -> Result<Session, WorkloadError> {
        let err = |m: String| WorkloadError::parse(self.records.path(), line, m);
        let rec: MooncakeRecord = serde_json::from_slice(bytes)
            .map_err(|e| err(format!("not a Mooncake record: {e}")))?;
        let b = self.options.block_tokens;
        let need = rec.input_length.div_ceil(b);
        if rec.input_length == 0 || need != rec.hash_ids.len() {
            return Err(err(format!(
                "input_length {} needs {need} blocks of {b} tokens, but hash_ids has {}",
                rec.input_length,
                rec.hash_ids.len()
            )));
        }
        if !(rec.timestamp >= 0.0 && rec.timestamp.is_finite()) {
            return Err(err(format!(
                "timestamp {} is not a time in ms",
                rec.timestamp
            )));
        }
        let mut tokens = Vec::with_capacity(rec.input_length);
        for &h in &rec.hash_ids {
            let len = b.min(rec.input_length - tokens.len());
            mooncake_block(
                h,
                len,
                self.options.seed,
                self.options.vocab_size,
                &mut tokens,
            );
        }
        let turn = Turn {
            messages: Vec::new(),
            prompt_text: None,
            prompt_tokens: tokens,
            max_tokens: u32::try_from(rec.output_length).unwrap_or(u32::MAX).max(1),
        };
        // Rounded, so integral milliseconds map to exact nanoseconds.
        let arrival = Nanos((rec.timestamp * 1e6).round().min(u64::MAX as f64) as u64);
        Ok(Session::single(self.next_id, arrival, turn))
    }
}

impl Iterator for MooncakeSessions {
    type Item = Result<Session, WorkloadError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self
            .options
            .max_requests
            .is_some_and(|m| self.next_id >= m as u64)
        {
            return None;
        }
        let item = match self.records.next()? {
            Ok((line, bytes)) => self.convert(line, &bytes),
            Err(e) => Err(e),
        };
        self.next_id += 1;
        Some(item)
    }
}

/// How Azure LLM inference trace rows become sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureOptions {
    /// Token ids are drawn from `0..vocab_size`. Default [`DEFAULT_SYNTHETIC_VOCAB`].
    pub vocab_size: u32,
    /// Salt of the random prompts.
    pub seed: u64,
    /// Stop after this many requests.
    pub max_requests: Option<usize>,
}

impl Default for AzureOptions {
    fn default() -> Self {
        AzureOptions {
            vocab_size: DEFAULT_SYNTHETIC_VOCAB,
            seed: 0,
            max_requests: None,
        }
    }
}

/// Requests of an Azure LLM inference CSV trace; an iterator of
/// `Result<Session, WorkloadError>`.
pub struct AzureSessions {
    path: PathBuf,
    reader: csv::Reader<DynRead>,
    columns: [usize; 3],
    first: Option<i128>,
    options: AzureOptions,
    next_id: u64,
    done: bool,
}

impl std::fmt::Debug for AzureSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureSessions")
            .field("path", &self.path)
            .field("options", &self.options)
            .field("next_id", &self.next_id)
            .finish()
    }
}

const AZURE_COLUMNS: [&str; 3] = ["TIMESTAMP", "ContextTokens", "GeneratedTokens"];

impl AzureSessions {
    /// Open an Azure CSV trace (optionally gzipped); the header must name the
    /// columns `TIMESTAMP`, `ContextTokens` and `GeneratedTokens` (any order,
    /// any case, other columns ignored).
    pub fn open(
        path: impl AsRef<Path>,
        options: AzureOptions,
    ) -> Result<AzureSessions, WorkloadError> {
        check_vocab(options.vocab_size)?;
        let path = path.as_ref().to_path_buf();
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_reader(io::open(&path)?);
        let header = reader
            .headers()
            .map_err(|e| WorkloadError::parse(&path, 1, format!("reading the CSV header: {e}")))?
            .clone();
        let mut columns = [0; 3];
        for (slot, name) in columns.iter_mut().zip(AZURE_COLUMNS) {
            *slot = header
                .iter()
                .position(|h| h.eq_ignore_ascii_case(name))
                .ok_or_else(|| {
                    WorkloadError::parse(
                        &path,
                        1,
                        format!(
                            "no `{name}` column in header {:?}",
                            header.iter().collect::<Vec<_>>()
                        ),
                    )
                })?;
        }
        Ok(AzureSessions {
            path,
            reader,
            columns,
            first: None,
            options,
            next_id: 0,
            done: false,
        })
    }

    fn convert(&mut self, record: &csv::StringRecord) -> Result<Session, WorkloadError> {
        let line = record.position().map_or(0, |p| p.line());
        let field = |i: usize| record.get(self.columns[i]).unwrap_or("");
        let err = |m: String| WorkloadError::parse(&self.path, line, m);
        let t = parse_timestamp(field(0))
            .ok_or_else(|| err(format!("bad TIMESTAMP {:?}", field(0))))?;
        let count = |i: usize| {
            field(i)
                .parse::<u64>()
                .map_err(|e| err(format!("bad {} {:?}: {e}", AZURE_COLUMNS[i], field(i))))
        };
        let (context, generated) = (count(1)?, count(2)?);
        let first = *self.first.get_or_insert(t);
        let arrival = Nanos(u64::try_from((t - first).max(0)).unwrap_or(u64::MAX));
        let key =
            mix64(mix64(self.options.seed ^ stream::AZURE.rotate_left(32)) ^ mix64(self.next_id));
        let len = usize::try_from(context.max(1)).unwrap_or(usize::MAX);
        let prompt_tokens = (0..len as u64)
            .map(|j| token_of(key.wrapping_add(j), self.options.vocab_size))
            .collect();
        let turn = Turn {
            messages: Vec::new(),
            prompt_text: None,
            prompt_tokens,
            max_tokens: u32::try_from(generated).unwrap_or(u32::MAX).max(1),
        };
        Ok(Session::single(self.next_id, arrival, turn))
    }
}

impl Iterator for AzureSessions {
    type Item = Result<Session, WorkloadError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done
            || self
                .options
                .max_requests
                .is_some_and(|m| self.next_id >= m as u64)
        {
            return None;
        }
        let mut record = csv::StringRecord::new();
        let item = match self.reader.read_record(&mut record) {
            Ok(false) => {
                self.done = true;
                return None;
            }
            Ok(true) => self.convert(&record),
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                if !matches!(
                    e.kind(),
                    csv::ErrorKind::UnequalLengths { .. } | csv::ErrorKind::Utf8 { .. }
                ) {
                    self.done = true;
                }
                Err(WorkloadError::parse(&self.path, line, e.to_string()))
            }
        };
        self.next_id += 1;
        Some(item)
    }
}

/// `YYYY-MM-DD HH:MM:SS[.fraction]` (or with `T`, optional trailing `Z`) as
/// nanoseconds since 1970-01-01 UTC; a plain number is taken as seconds.
fn parse_timestamp(s: &str) -> Option<i128> {
    if let Ok(secs) = s.parse::<f64>() {
        return secs.is_finite().then_some((secs * 1e9) as i128);
    }
    let s = s.strip_suffix('Z').unwrap_or(s);
    let (date, time) = s.split_once([' ', 'T'])?;
    let mut d = date.splitn(3, '-').map(|x| x.parse::<i64>().ok());
    let (y, mo, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':').map(|x| x.parse::<i64>().ok());
    let (h, mi, sec) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&day) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) || frac.len() > 18 {
        return None;
    }
    let nanos_frac = format!("{frac:0<9}")[..9].parse::<i128>().ok()?;
    let days = days_from_civil(y, mo, day);
    Some(
        (i128::from(days) * 86_400 + i128::from(h * 3600 + mi * 60 + sec)) * 1_000_000_000
            + nanos_frac,
    )
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::datasets_dir;
    use crate::testutil::temp_file;
    use std::collections::HashMap;

    #[test]
    fn timestamps_parse() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        let a = parse_timestamp("2023-11-16 18:17:03.9799600").unwrap();
        let b = parse_timestamp("2023-11-17T00:00:00Z").unwrap();
        assert_eq!(
            b - a,
            ((5 * 3600 + 42 * 60 + 56) as i128) * 1_000_000_000 + 20_040_000
        );
        assert_eq!(parse_timestamp("12.5"), Some(12_500_000_000));
        for bad in [
            "",
            "2023-13-01 00:00:00",
            "2023-11-16",
            "2023-11-16 1:2",
            "2023-11-16 00:00:00.x",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn mooncake_sample_lengths_arrivals_and_sharing() {
        let path = datasets_dir().join("mooncake/trace_sample.jsonl");
        let sessions: Vec<Session> = MooncakeSessions::open(&path, MooncakeOptions::default())
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(sessions.len(), 1000);
        let first = &sessions[0].turns[0];
        assert_eq!((first.prompt_tokens.len(), first.max_tokens), (40_160, 6));
        assert!(first.prompt_text.is_none() && first.messages.is_empty());
        assert!(sessions.windows(2).all(|w| w[0].arrival <= w[1].arrival));
        assert!(sessions.iter().all(|s| s.turns[0]
            .prompt_tokens
            .iter()
            .all(|&t| t < DEFAULT_SYNTHETIC_VOCAB)));

        // Re-read the raw records: equal hash ids ⇔ equal 512-token blocks.
        let text = std::fs::read_to_string(&path).unwrap();
        let mut by_id: HashMap<u64, &[u32]> = HashMap::new();
        let mut checked = 0;
        for (line, s) in text.lines().zip(&sessions) {
            let rec: MooncakeRecord = serde_json::from_str(line).unwrap();
            assert_eq!(s.arrival, Nanos::from_millis(rec.timestamp as u64));
            let toks = &s.turns[0].prompt_tokens;
            assert_eq!(toks.len(), rec.input_length);
            for (i, &h) in rec.hash_ids.iter().enumerate() {
                let block = &toks[i * 512..toks.len().min((i + 1) * 512)];
                if block.len() < 512 {
                    continue;
                }
                match by_id.get(&h) {
                    Some(prev) => {
                        assert_eq!(*prev, block, "hash id {h}");
                        checked += 1;
                    }
                    None => {
                        by_id.insert(h, block);
                    }
                }
            }
        }
        assert!(checked > 1000, "{checked} repeated full blocks compared");
        // Distinct ids share no block.
        let distinct: std::collections::HashSet<&[u32]> = by_id.values().copied().collect();
        assert_eq!(distinct.len(), by_id.len());
    }

    #[test]
    fn mooncake_truncates_last_block_and_is_seeded() {
        let path = temp_file("mc.jsonl", b"{\"timestamp\": 1500, \"input_length\": 700, \"output_length\": 0, \"hash_ids\": [9, 4]}\n");
        let run = |seed| {
            let o = MooncakeOptions {
                seed,
                vocab_size: 1000,
                ..MooncakeOptions::default()
            };
            MooncakeSessions::open(&path, o)
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
        };
        let s = run(1);
        let t = &s.turns[0];
        assert_eq!(s.arrival, Nanos::from_millis(1500));
        assert_eq!((t.prompt_tokens.len(), t.max_tokens), (700, 1));
        let mut b9 = Vec::new();
        mooncake_block(9, 512, 1, 1000, &mut b9);
        mooncake_block(4, 188, 1, 1000, &mut b9);
        assert_eq!(t.prompt_tokens, b9);
        assert!(t.prompt_tokens.iter().all(|&x| x < 1000));
        assert_eq!(run(1), s);
        assert_ne!(run(2).turns[0].prompt_tokens, t.prompt_tokens);
    }

    #[test]
    fn mooncake_errors_name_the_line() {
        let path = temp_file(
            "mc-bad.jsonl",
            b"{\"timestamp\": 0, \"input_length\": 10, \"output_length\": 1, \"hash_ids\": [1]}\n{\"timestamp\": 0, \"input_length\": 1000, \"output_length\": 1, \"hash_ids\": [1]}\nnot json\n",
        );
        let got: Vec<_> = MooncakeSessions::open(&path, MooncakeOptions::default())
            .unwrap()
            .collect();
        assert_eq!(got.len(), 3);
        assert!(got[0].is_ok());
        let e1 = got[1].as_ref().unwrap_err().to_string();
        assert!(e1.ends_with("mc-bad.jsonl:2: input_length 1000 needs 2 blocks of 512 tokens, but hash_ids has 1"), "{e1}");
        let e2 = got[2].as_ref().unwrap_err().to_string();
        assert!(e2.contains("mc-bad.jsonl:3: not a Mooncake record"), "{e2}");
    }

    #[test]
    fn azure_sample_arrivals_lengths_no_sharing() {
        let path = datasets_dir().join("azure/code_sample.csv");
        let sessions: Vec<Session> = AzureSessions::open(&path, AzureOptions::default())
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(sessions.len(), 2000);
        assert_eq!(sessions[0].arrival, Nanos::ZERO);
        // 18:17:04.0319600 − 18:17:03.9799600
        assert_eq!(sessions[1].arrival, Nanos(52_000_000));
        assert!(sessions.windows(2).all(|w| w[0].arrival <= w[1].arrival));
        let t0 = &sessions[0].turns[0];
        assert_eq!((t0.prompt_tokens.len(), t0.max_tokens), (4808, 10));
        // No two prompts share even their first 16 tokens.
        let heads: std::collections::HashSet<&[u32]> = sessions
            .iter()
            .map(|s| &s.turns[0].prompt_tokens[..16.min(s.turns[0].prompt_tokens.len())])
            .collect();
        assert_eq!(heads.len(), sessions.len());
    }

    #[test]
    fn azure_header_and_row_errors() {
        let p = temp_file(
            "az-nohdr.csv",
            b"time,ContextTokens,GeneratedTokens\n1,2,3\n",
        );
        let e = AzureSessions::open(&p, AzureOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("az-nohdr.csv:1: no `TIMESTAMP` column"), "{e}");
        let p = temp_file(
            "az-rows.csv",
            b"GeneratedTokens,TIMESTAMP,ContextTokens\n5,2023-11-16 18:00:00.5,7\n6,2023-11-16 18:00:01,x\n0,2023-11-16 18:00:03,9\n",
        );
        let o = AzureOptions {
            max_requests: Some(3),
            ..AzureOptions::default()
        };
        let got: Vec<_> = AzureSessions::open(&p, o).unwrap().collect();
        assert_eq!(got.len(), 3);
        let s0 = got[0].as_ref().unwrap();
        assert_eq!(
            (s0.turns[0].prompt_tokens.len(), s0.turns[0].max_tokens),
            (7, 5)
        );
        let e = got[1].as_ref().unwrap_err().to_string();
        assert!(e.contains("az-rows.csv:3: bad ContextTokens \"x\""), "{e}");
        let s2 = got[2].as_ref().unwrap();
        assert_eq!(
            (s2.arrival, s2.turns[0].max_tokens),
            (Nanos(2_500_000_000), 1)
        );
    }
}
