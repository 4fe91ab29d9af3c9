//! Channel names: 1–128 of `A-Z a-z 0-9 _ - . : @` (DESIGN §1). Anything else is refused with a
//! reason the client can read.

use std::fmt;

/// The longest channel name.
pub const MAX_NAME_LEN: usize = 128;

/// Why a channel name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameError {
    /// The name is empty.
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`].
    TooLong,
    /// The name holds this byte, which is not allowed.
    BadByte(u8),
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Empty => write!(f, "channel name is empty"),
            NameError::TooLong => {
                write!(f, "channel name is longer than {MAX_NAME_LEN} characters")
            }
            NameError::BadByte(b) if b.is_ascii_graphic() || *b == b' ' => {
                write!(f, "channel name contains {:?}; allowed are A-Z a-z 0-9 _ - . : @", *b as char)
            }
            NameError::BadByte(b) => {
                write!(f, "channel name contains byte 0x{b:02x}; allowed are A-Z a-z 0-9 _ - . : @")
            }
        }
    }
}

impl std::error::Error for NameError {}

/// Checks a channel name.
pub fn validate_channel_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong);
    }
    match name.bytes().find(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'@'))) {
        Some(bad) => Err(NameError::BadByte(bad)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_design() {
        for good in ["a", "room:42", "user@host.example", "A-Z_0.9", &"x".repeat(128)] {
            assert_eq!(validate_channel_name(good), Ok(()), "{good}");
        }
        assert_eq!(validate_channel_name(""), Err(NameError::Empty));
        assert_eq!(validate_channel_name(&"x".repeat(129)), Err(NameError::TooLong));
        assert_eq!(validate_channel_name("a b"), Err(NameError::BadByte(b' ')));
        assert_eq!(validate_channel_name("a/b"), Err(NameError::BadByte(b'/')));
        assert_eq!(validate_channel_name("é"), Err(NameError::BadByte(0xc3)));
        assert!(NameError::BadByte(b'/').to_string().contains("'/'"));
    }
}
