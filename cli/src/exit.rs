//! The exit codes of `caplab`, the same for every command, and the one-line error message.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success; for `check`: linearizable |
//! | 1 | the answer is no: not linearizable, not Ready, an operation refused |
//! | 2 | unknown or failed at run time: a check's deadline passed, a cluster unreachable |
//! | 3 | bad input or usage: arguments, a missing or malformed file, a fault the operator refused |

use std::fmt;
use std::process::ExitCode;

use caplab_checker::Overall;

/// Not linearizable; a cluster not Ready; an operation refused.
pub const NO: u8 = 1;
/// A check's deadline passed; any error at run time that is not the input's fault.
pub const UNKNOWN: u8 = 2;
/// Bad arguments, a missing or malformed input file, a request refused as invalid.
pub const BAD_INPUT: u8 = 3;

/// An error caused by what the user gave (arguments, files, a spec the operator refused):
/// the command exits with [`BAD_INPUT`].
#[derive(Debug)]
pub struct BadInput(pub String);

impl fmt::Display for BadInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

/// Marks `error` (with its whole context) as the input's fault.
pub fn bad_input(error: anyhow::Error) -> anyhow::Error {
    anyhow::Error::new(BadInput(one_line(&error)))
}

/// The exit code for an error that ended a command.
pub fn code_of(error: &anyhow::Error) -> ExitCode {
    if error
        .chain()
        .any(|c| c.downcast_ref::<BadInput>().is_some())
    {
        ExitCode::from(BAD_INPUT)
    } else {
        ExitCode::from(UNKNOWN)
    }
}

/// The exit code of a check's verdict.
pub fn of_verdict(overall: Overall) -> ExitCode {
    match overall {
        Overall::Linearizable => ExitCode::SUCCESS,
        Overall::NotLinearizable => ExitCode::from(NO),
        Overall::Unknown => ExitCode::from(UNKNOWN),
    }
}

/// An error and its causes on one line: `reading x.json: No such file or directory`.
pub fn one_line(e: &anyhow::Error) -> String {
    e.chain()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ")
        .replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::{anyhow, Context};

    #[test]
    fn bad_input_survives_context_and_keeps_the_message() {
        let e = bad_input(anyhow!("no such file").context("reading h.json"));
        assert_eq!(one_line(&e), "reading h.json: no such file");
        let wrapped = Err::<(), _>(e)
            .context("caplab check")
            .expect_err("an error");
        assert_eq!(code_of(&wrapped), ExitCode::from(BAD_INPUT));
        assert_eq!(code_of(&anyhow!("timed out")), ExitCode::from(UNKNOWN));
    }
}
