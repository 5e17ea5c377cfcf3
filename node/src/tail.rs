//! The pieces every engine uses to answer `GET /v1/log` (`caplab_api::tail`): a command in a
//! few words, and [`Recent`], the bounded ring 2pc and quorum keep of what they last did
//! (their logs are not ordered lists the way Raft's and the primary's are).

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use caplab_api::tail::{TailEntry, MAX_LIMIT};

use crate::types::Command;

/// Keys longer than this are cut in the words of an entry (keys may be 256 bytes).
const KEY_CHARS: usize = 24;

/// `x=5`, or `cas x 5→6`.
pub fn describe(command: &Command) -> String {
    let key = short_key(command.key());
    match command {
        Command::Write { value, .. } => format!("{key}={value}"),
        Command::Cas { expected, new, .. } => format!("cas {key} {expected}→{new}"),
    }
}

/// Several commands (a Raft entry's batch): the first, and how many more.
pub fn describe_all(commands: &[Command]) -> String {
    match commands {
        [] => "blank".to_string(),
        [one] => describe(one),
        [first, rest @ ..] => format!("{} (+{} more)", describe(first), rest.len()),
    }
}

/// `key` in at most [`KEY_CHARS`] chars: cut in the middle, because keys often differ only at
/// the end (a workload's `w1796018973351-9b02746e-k0`, `…-k1`).
fn short_key(key: &str) -> String {
    let n = key.chars().count();
    if n <= KEY_CHARS {
        return key.to_string();
    }
    let end = (KEY_CHARS - 1) / 2;
    let start: String = key.chars().take(KEY_CHARS - 1 - end).collect();
    let tail: String = key.chars().skip(n - end).collect();
    format!("{start}…{tail}")
}

/// The last [`MAX_LIMIT`] entries an engine recorded, oldest first. Recording takes a lock for
/// a push; reading clones at most [`MAX_LIMIT`] small entries. An engine that records often
/// keeps its own compact `T` and puts it in words ([`TailEntry`]) only when the log is read.
pub struct Recent<T = TailEntry>(Mutex<VecDeque<T>>);

impl<T> Default for Recent<T> {
    fn default() -> Self {
        Recent(Mutex::default())
    }
}

impl<T: Clone> Recent<T> {
    pub fn push(&self, entry: T) {
        let mut ring = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if ring.len() == MAX_LIMIT {
            ring.pop_front();
        }
        ring.push_back(entry);
    }

    /// The last `limit` entries, oldest first.
    pub fn last(&self, limit: usize) -> Vec<T> {
        let ring = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let skip = ring.len().saturating_sub(limit);
        ring.iter().skip(skip).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_in_words() {
        let w = Command::Write {
            key: "x".into(),
            value: 5,
        };
        let c = Command::Cas {
            key: "k".repeat(40),
            expected: 1,
            new: 2,
        };
        assert_eq!(describe(&w), "x=5");
        assert_eq!(
            describe(&c),
            format!("cas {} 1→2", short_key(&"k".repeat(40)))
        );
        assert_eq!(describe_all(&[w.clone(), c]), "x=5 (+1 more)");
        assert_eq!(describe_all(&[]), "blank");
    }

    #[test]
    fn long_keys_keep_their_start_and_end() {
        assert_eq!(
            short_key("w1796018973351-9b02746e-k0"),
            "w17960189733…9b02746e-k0"
        );
        assert_eq!(short_key("short"), "short");
        let cut = short_key(&"é".repeat(30));
        assert_eq!(cut.chars().count(), KEY_CHARS);
        assert_eq!(cut, format!("{}…{}", "é".repeat(12), "é".repeat(11)));
    }

    #[test]
    fn the_ring_is_bounded_and_keeps_the_newest() {
        let recent = Recent::default();
        for i in 0..(MAX_LIMIT as u64 + 10) {
            recent.push(TailEntry::new(i, None, "x=1"));
        }
        let last = recent.last(3);
        assert_eq!(
            last.iter().map(|e| e.index).collect::<Vec<_>>(),
            [
                MAX_LIMIT as u64 + 7,
                MAX_LIMIT as u64 + 8,
                MAX_LIMIT as u64 + 9
            ]
        );
        assert_eq!(recent.last(usize::MAX).len(), MAX_LIMIT);
    }
}
