//! A build's log: the builder's output split into lines for the clients,
//! stored bzip2-compressed where CppNix and `nix log` look for it
//! (`<log dir>/drvs/<first two chars>/<rest>.bz2`), the last lines kept for
//! the failure message, and `max-build-log-size` enforced.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};

pub struct BuildLog {
    file: Option<bzip2::write::BzEncoder<std::fs::File>>,
    path: PathBuf,
    partial: Vec<u8>,
    tail: VecDeque<String>,
    tail_len: usize,
    written: u64,
    limit: u64,
}

impl BuildLog {
    /// Opens the log file for a derivation (`compress` off writes it plain,
    /// without `.bz2`).
    pub fn create(path: &Path, tail_len: usize, limit: u64) -> std::io::Result<BuildLog> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::File::create(path)?;
        Ok(BuildLog {
            // Block size 100k (level 1): logs are small, and the default 600k
            // blocks cost every build megabytes of fresh memory.
            file: Some(bzip2::write::BzEncoder::new(file, bzip2::Compression::fast())),
            path: path.to_owned(),
            partial: Vec::new(),
            tail: VecDeque::new(),
            tail_len,
            written: 0,
            limit,
        })
    }

    /// Feeds raw output; returns the complete lines it finished.
    pub fn feed(&mut self, data: &[u8]) -> Vec<String> {
        self.written += data.len() as u64;
        if let Some(f) = &mut self.file {
            let _ = f.write_all(data);
        }
        let mut lines = Vec::new();
        for &b in data {
            match b {
                b'\n' => lines.push(self.finish_line()),
                // A carriage return starts the line over, as CppNix's log
                // processing (and a terminal) treats it.
                b'\r' => self.partial.clear(),
                _ => self.partial.push(b),
            }
        }
        lines
    }

    fn finish_line(&mut self) -> String {
        let line = String::from_utf8_lossy(&self.partial).into_owned();
        self.partial.clear();
        // A builder's structured message is not one of its log lines.
        if self.tail_len > 0 && json_message(&line).is_none() {
            if self.tail.len() == self.tail_len {
                self.tail.pop_front();
            }
            self.tail.push_back(line.clone());
        }
        line
    }

    /// Whether the log grew beyond `max-build-log-size` (0: no limit).
    pub fn over_limit(&self) -> bool {
        self.limit != 0 && self.written > self.limit
    }

    /// The last lines (for "last N log lines" in failure messages).
    pub fn tail(&self) -> Vec<String> {
        self.tail.iter().cloned().collect()
    }

    /// Ends the log, flushing a last unterminated line; returns it if any.
    pub fn finish(&mut self) -> Option<String> {
        let last = (!self.partial.is_empty()).then(|| self.finish_line());
        if let Some(f) = self.file.take() {
            let _ = f.finish().and_then(|mut f| f.flush());
        }
        last
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A builder's structured message (CppNix `handleJSONLogMessage`): a line
/// `@nix ` followed by a JSON object with an `action`, as builtins (and
/// Nix run inside a build) print their warnings. It stays in the log file
/// but is no log line: a message is sent to the client, anything else
/// (activities) is dropped. A line that does not parse is a log line.
#[derive(Debug, PartialEq, Eq)]
pub enum JsonMessage {
    /// `"action": "msg"`: a message at CppNix verbosity `level`.
    Msg {
        level: u64,
        text: String,
    },
    Other,
}

pub fn json_message(line: &str) -> Option<JsonMessage> {
    let json: serde_json::Value = serde_json::from_str(line.strip_prefix("@nix ")?).ok()?;
    match json.get("action")?.as_str()? {
        "msg" => {
            Some(JsonMessage::Msg { level: json.get("level")?.as_u64()?, text: json.get("msg")?.as_str()?.to_owned() })
        }
        _ => Some(JsonMessage::Other),
    }
}

impl Drop for BuildLog {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structured_messages() {
        assert_eq!(
            json_message(r#"@nix {"action":"msg","level":1,"msg":"warning: x"}"#),
            Some(JsonMessage::Msg { level: 1, text: "warning: x".into() })
        );
        assert_eq!(json_message(r#"@nix {"action":"start","id":1}"#), Some(JsonMessage::Other));
        assert_eq!(json_message("@nix not json"), None);
        assert_eq!(json_message(r#"@nix {"level":1}"#), None);
        assert_eq!(json_message("plain line"), None);
    }

    #[test]
    fn structured_messages_stay_out_of_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = BuildLog::create(&dir.path().join("log.bz2"), 10, 0).unwrap();
        let lines = log.feed(b"one\n@nix {\"action\":\"msg\",\"level\":1,\"msg\":\"w\"}\ntwo\n");
        assert_eq!(lines.len(), 3);
        assert_eq!(log.tail(), ["one", "two"]);
    }
}
