//! [`WorkloadError`]: everything that can go wrong while loading or generating a workload.
//!
//! It is `kvroute_tokenize::TokenizeError` under this crate's name: the
//! workloads turn text into tokens with that crate's tokenizer and chat
//! template, so their errors and the dataset errors raised here share one
//! type. Every variant names what it is about (a file, a line, a setting), so
//! a message like `datasets/x.jsonl:17: expected value at column 1` is
//! enough to find the problem without a debugger.

pub use kvroute_tokenize::TokenizeError as WorkloadError;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_file_and_line() {
        let e = WorkloadError::parse("data/x.jsonl", 17, "expected value");
        assert_eq!(e.to_string(), "data/x.jsonl:17: expected value");
        let e = WorkloadError::setting("rate", "must be > 0, got -1");
        assert_eq!(e.to_string(), "invalid setting `rate`: must be > 0, got -1");
    }
}
