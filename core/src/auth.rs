//! Client authentication on the client port, as Redis's `requirepass` does it: one password for
//! the `default` user, checked in constant time, and the rule for what a connection that has
//! not authenticated yet may send. The connection keeps one `bool`; the decisions are here.

use std::fmt;

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::command::{self, Command, CommandError, Credentials};

/// The only user: `AUTH <password>` names it implicitly.
pub const DEFAULT_USER: &[u8] = b"default";

/// Redis's refusal of a command sent before authenticating.
pub const NO_AUTH: &str = "NOAUTH Authentication required.";

/// Redis's refusal of `HELLO` without its `AUTH` option before authenticating (the text of
/// Redis 7.2, the version this server reports; 7.0 omits `<proto>`).
pub const HELLO_NO_AUTH: &str = "NOAUTH HELLO must be called with the client already \
     authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to \
     authenticate the client and select the RESP protocol version at the same time";

/// The node's password, kept as its SHA-256 digest: comparing digests of equal length in
/// constant time tells nothing about the password's length or content through timing.
#[derive(Clone)]
pub struct Password {
    digest: [u8; 32],
}

impl Password {
    #[must_use]
    pub fn new(text: &[u8]) -> Password {
        Password { digest: Sha256::digest(text).into() }
    }

    /// Whether `candidate` is the password, in time independent of where they differ.
    #[must_use]
    pub fn matches(&self, candidate: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(candidate).into();
        bool::from(self.digest.ct_eq(&digest))
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("Password(..)")
    }
}

/// Why credentials were refused, with Redis's texts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// `AUTH <password>` on a node without a password.
    #[error(
        "ERR AUTH <password> called without any password configured for the default user. \
         Are you sure your configuration is correct?"
    )]
    NoPasswordConfigured,
    /// A wrong password, or a user other than `default`: one text for both, as in Redis, so
    /// that the reply does not tell which users exist.
    #[error("WRONGPASS invalid username-password pair or user is disabled.")]
    WrongPassword,
}

impl From<AuthError> for CommandError {
    fn from(error: AuthError) -> CommandError {
        CommandError(error.to_string())
    }
}

/// Checks the credentials of `AUTH` or of `HELLO`'s `AUTH` option against the node's
/// `password` (`None`: the node has none, and the `default` user takes any password).
///
/// # Errors
/// [`AuthError::NoPasswordConfigured`] for `AUTH <password>` on a node without a password;
/// [`AuthError::WrongPassword`] for a wrong password or another user.
pub fn authenticate(
    password: Option<&Password>,
    credentials: &Credentials,
) -> Result<(), AuthError> {
    let default_user = credentials.username.as_deref().is_none_or(|name| name == DEFAULT_USER);
    let Some(password) = password else {
        return match (&credentials.username, default_user) {
            (None, _) => Err(AuthError::NoPasswordConfigured),
            (Some(_), true) => Ok(()),
            (Some(_), false) => Err(AuthError::WrongPassword),
        };
    };
    // Both checks run whatever the user, so that the time taken does not depend on it.
    let password_matches = password.matches(&credentials.password);
    if default_user && password_matches {
        Ok(())
    } else {
        Err(AuthError::WrongPassword)
    }
}

/// Parses a command of a connection that has not authenticated, in Redis's order: an unknown
/// command or subcommand, or a number of arguments the command table forbids, is reported as
/// such; then every command but `AUTH`, `HELLO` and `QUIT` is refused with [`NO_AUTH`] and
/// not run.
///
/// # Errors
/// The command's parse error, or [`NO_AUTH`].
pub fn parse_unauthenticated(arguments: &[&[u8]]) -> Result<Command, CommandError> {
    let parsed = command::parse(arguments);
    let name = arguments.first().copied().unwrap_or_default();
    if allowed_before_authentication(name) {
        return parsed;
    }
    match parsed {
        Err(error) if reported_before_authentication(name, arguments.len(), &error) => Err(error),
        _ => Err(CommandError(NO_AUTH.into())),
    }
}

/// The commands Redis runs without authentication (its `no-auth` flag, and QUIT).
fn allowed_before_authentication(name: &[u8]) -> bool {
    ["auth", "hello", "quit"].iter().any(|allowed| name.eq_ignore_ascii_case(allowed.as_bytes()))
}

/// Whether Redis finds `error` while looking the command up, before it checks authentication:
/// an unknown command or subcommand, or an argument count the command table rules out. Other
/// errors (options, values, counts only the command itself checks) come from running it.
fn reported_before_authentication(name: &[u8], count: usize, error: &CommandError) -> bool {
    let name = String::from_utf8_lossy(name).to_ascii_lowercase();
    match command::declared_arity(&name) {
        None => true,
        Some(arity) if !command::arity_allows(arity, count) => true,
        Some(_) => error.is_subcommand_lookup(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<&[u8]> {
        line.split(' ').map(str::as_bytes).collect()
    }

    fn unauthenticated(line: &str) -> Result<Command, CommandError> {
        parse_unauthenticated(&words(line))
    }

    fn credentials(username: Option<&str>, password: &str) -> Credentials {
        Credentials {
            username: username.map(|name| name.as_bytes().to_vec()),
            password: password.as_bytes().to_vec(),
        }
    }

    #[test]
    fn passwords_match_only_themselves() {
        let password = Password::new(b"secret");
        assert!(password.matches(b"secret"));
        for wrong in ["", "secre", "secret ", "Secret", "secretsecret"] {
            assert!(!password.matches(wrong.as_bytes()), "{wrong:?} matched");
        }
        assert_eq!(format!("{password:?}"), "Password(..)");
    }

    #[test]
    fn credentials_are_checked_like_redis() {
        let password = Password::new(b"secret");
        let required = Some(&password);
        assert_eq!(authenticate(required, &credentials(None, "secret")), Ok(()));
        assert_eq!(authenticate(required, &credentials(Some("default"), "secret")), Ok(()));
        for (user, pass) in [(None, "wrong"), (Some("default"), "wrong"), (Some("other"), "secret")]
        {
            let result = authenticate(required, &credentials(user, pass));
            assert_eq!(result, Err(AuthError::WrongPassword), "{user:?} {pass:?}");
        }
        assert_eq!(
            authenticate(None, &credentials(None, "any")),
            Err(AuthError::NoPasswordConfigured)
        );
        assert_eq!(authenticate(None, &credentials(Some("default"), "any")), Ok(()));
        let other = authenticate(None, &credentials(Some("other"), "any"));
        assert_eq!(other, Err(AuthError::WrongPassword));
        assert_eq!(
            CommandError::from(AuthError::WrongPassword).0,
            "WRONGPASS invalid username-password pair or user is disabled."
        );
    }

    #[test]
    fn unauthenticated_commands_are_refused_in_redis_order() {
        for refused in ["GET k", "SET k v", "SET k v BADOPT", "PING", "PING a b", "MSET a 1 b"] {
            assert_eq!(unauthenticated(refused), Err(CommandError(NO_AUTH.into())), "{refused}");
        }
        for refused in ["INFO", "CLIENT SETNAME x", "FLUSHALL a b", "SELECT x", "DBSIZE"] {
            assert_eq!(unauthenticated(refused), Err(CommandError(NO_AUTH.into())), "{refused}");
        }
        let reported = [
            ("GET", "ERR wrong number of arguments for 'get' command"),
            ("FOO bar", "ERR unknown command 'FOO', with args beginning with: 'bar' "),
            ("CLIENT FOO", "ERR unknown subcommand 'FOO'. Try CLIENT HELP."),
            ("CONFIG GET", "ERR wrong number of arguments for 'config|get' command"),
            ("AUTH a b c", "ERR syntax error"),
            ("HELLO 4", "NOPROTO unsupported protocol version"),
            ("HELLO 2 AUTH default", "ERR Syntax error in HELLO option 'AUTH'"),
        ];
        for (line, text) in reported {
            assert_eq!(unauthenticated(line).unwrap_err().0, text, "{line}");
        }
        assert_eq!(parse_unauthenticated(&[]).unwrap_err().0, "ERR empty command");
        for allowed in ["AUTH secret", "auth default secret", "HELLO", "HELLO 2 AUTH u p", "QUIT"] {
            assert!(unauthenticated(allowed).is_ok(), "{allowed} refused");
        }
    }
}
