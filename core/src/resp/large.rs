//! A command too large to wait for in a connection's input buffer.
//!
//! [`parse_command`](super::parse_command) parses a command only once all of it is in one
//! buffer, and its arguments are ranges into that buffer, which the command then copies. For
//! a request of many megabytes (a large `MSET`, a large value) that means the request exists
//! twice, as received bytes and as the command's values, and the buffer grows by doubling while
//! it arrives. A [`LargeCommand`] instead takes each argument out of the input as soon as it
//! has arrived, into a buffer of its own sized by its bulk header, so the caller can drop the
//! bytes it consumed and keep only the small tail not yet taken. Once complete, its arguments
//! are owned and can be moved into the command ([`crate::command::parse_owned`]).
//!
//! The same protocol rules and limits apply as in `parse_command`, and the same errors come
//! out. Unlike the rest of the codec it keeps state between calls: the arguments taken so far,
//! and the bulk being filled.

use super::{
    bulk_data, read_argument_header, read_decimal, Decimal, RespError, RespLimits,
    BULK_ARGUMENT_BYTES_MIN,
};

/// A RESP array command whose arguments are taken out of the input as they arrive.
#[derive(Debug)]
pub struct LargeCommand {
    /// How many arguments the array header announced.
    expected: usize,
    /// The arguments complete so far, in order.
    arguments: Vec<Vec<u8>>,
    /// A bulk whose header was read and whose data is still arriving, with its length.
    filling: Option<(Vec<u8>, usize)>,
    /// Bytes of input taken so far (headers, data and terminators).
    taken: usize,
}

/// What [`LargeCommand::feed`] did with the input it was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fed {
    /// Bytes taken from the front of the input; the caller drops them.
    pub consumed: usize,
    /// Whether every argument has now arrived.
    pub complete: bool,
}

impl LargeCommand {
    /// Reads the array header at the front of `input` (which starts with `*`) and takes what
    /// follows of the command. Returns `None` when the header itself is incomplete, or when
    /// the header announces no arguments (the caller's `parse_command` handles both).
    ///
    /// # Errors
    ///
    /// As `parse_command`: a bad header or a length beyond `limits`.
    pub fn start(
        input: &[u8],
        limits: &RespLimits,
    ) -> Result<Option<(LargeCommand, Fed)>, RespError> {
        debug_assert_eq!(input.first(), Some(&b'*'));
        let (length, header_end) = match read_decimal(input, 1) {
            Decimal::Incomplete => return Ok(None),
            Decimal::Invalid => return Err(RespError::InvalidMultibulkLength),
            Decimal::Complete { value, end } => (value, end),
        };
        if length <= 0 {
            return Ok(None);
        }
        let expected = usize::try_from(length)
            .ok()
            .filter(|length| *length <= limits.array_length_max)
            .ok_or(RespError::InvalidMultibulkLength)?;
        let room = (input.len() - header_end) / BULK_ARGUMENT_BYTES_MIN + 1;
        let mut command = LargeCommand {
            expected,
            arguments: Vec::with_capacity(expected.min(room)),
            filling: None,
            taken: header_end,
        };
        let mut fed = command.feed(&input[header_end..], limits)?;
        fed.consumed += header_end;
        Ok(Some((command, fed)))
    }

    /// Takes as much of the command as `input` holds: whole arguments, and the data of a bulk
    /// still arriving. A bulk header that is cut short stays in the input for the next call.
    ///
    /// # Errors
    ///
    /// As `parse_command`: a missing `$`, a bad or too long bulk length, a bulk not followed
    /// by `\r\n`. The command is then unusable; the connection should close.
    pub fn feed(&mut self, input: &[u8], limits: &RespLimits) -> Result<Fed, RespError> {
        let mut position = 0;
        while self.arguments.len() < self.expected {
            let Some(taken) = self.take_argument(&input[position..], limits)? else {
                break;
            };
            position += taken;
        }
        self.taken += position;
        let complete = self.arguments.len() == self.expected;
        debug_assert!(!complete || self.filling.is_none());
        Ok(Fed { consumed: position, complete })
    }

    /// Bytes of the command taken so far: what it holds, for the caller's query buffer limit.
    #[must_use]
    pub fn taken_bytes(&self) -> usize {
        self.taken
    }

    /// The arguments, once [`feed`](Self::feed) said the command is complete.
    ///
    /// # Panics
    ///
    /// If the command is not complete: a caller's mistake, not an input's.
    #[must_use]
    pub fn into_arguments(self) -> Vec<Vec<u8>> {
        assert_eq!(self.arguments.len(), self.expected, "a large command taken before complete");
        self.arguments
    }

    /// Takes one argument, or the part of one that has arrived, from the front of `input`.
    /// Returns the bytes taken, or `None` when nothing could be taken yet.
    fn take_argument(
        &mut self,
        input: &[u8],
        limits: &RespLimits,
    ) -> Result<Option<usize>, RespError> {
        if let Some((data, length)) = &mut self.filling {
            let wanted = *length - data.len();
            let arrived = wanted.min(input.len());
            data.extend_from_slice(&input[..arrived]);
            if data.len() < *length {
                return Ok((arrived > 0).then_some(arrived));
            }
            // All data is here: the terminator must follow, possibly in a later call.
            return match bulk_data(input, arrived, 0)? {
                None => Ok((arrived > 0).then_some(arrived)),
                Some(_) => {
                    let (data, _) = self.filling.take().expect("filling");
                    self.arguments.push(data);
                    Ok(Some(arrived + 2))
                }
            };
        }
        let Some((length, data_start)) = read_argument_header(input, 0, limits)? else {
            return Ok(None);
        };
        if let Some(range) = bulk_data(input, data_start, length)? {
            self.arguments.push(input[range.clone()].to_vec());
            return Ok(Some(range.end + 2));
        }
        // Sized by its header, so it is never copied while it grows; the header's length is
        // within the bulk limit, as any buffered request's is.
        let arrived = input.len().min(data_start + length) - data_start;
        let mut data = Vec::with_capacity(length);
        data.extend_from_slice(&input[data_start..data_start + arrived]);
        self.filling = Some((data, length));
        Ok(Some(data_start + arrived))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{parse_command, Parsed};
    use super::*;
    use proptest::prelude::*;

    /// A command's arguments, and the bytes after it.
    type Taken = (Vec<Vec<u8>>, Vec<u8>);

    /// Feeds `input` in pieces of `piece` bytes, keeping what was not consumed in front of the
    /// next piece, as a connection does. Returns the arguments and the bytes left over.
    fn feed_in_pieces(
        input: &[u8],
        piece: usize,
        limits: &RespLimits,
    ) -> Result<Option<Taken>, RespError> {
        let mut buffered = Vec::new();
        let mut command: Option<LargeCommand> = None;
        let mut pieces = input.chunks(piece.max(1));
        loop {
            let fed = match command.as_mut() {
                Some(command) => command.feed(&buffered, limits)?,
                None if buffered.is_empty() => Fed { consumed: 0, complete: false },
                None => match LargeCommand::start(&buffered, limits)? {
                    Some((started, fed)) => {
                        command = Some(started);
                        fed
                    }
                    None => Fed { consumed: 0, complete: false },
                },
            };
            buffered.drain(..fed.consumed);
            if fed.complete {
                buffered.extend(pieces.flatten());
                let arguments = command.take().expect("started").into_arguments();
                return Ok(Some((arguments, buffered)));
            }
            let Some(next) = pieces.next() else {
                return Ok(None);
            };
            buffered.extend_from_slice(next);
        }
    }

    fn encode(arguments: &[Vec<u8>]) -> Vec<u8> {
        let slices: Vec<&[u8]> = arguments.iter().map(Vec::as_slice).collect();
        let mut output = Vec::new();
        super::super::encode_command(&mut output, &slices);
        output
    }

    #[test]
    fn arguments_come_out_whole_whatever_the_pieces() {
        let arguments = vec![b"MSET".to_vec(), b"k".to_vec(), vec![b'v'; 1000], b"".to_vec()];
        let arguments = [arguments, vec![b"x".to_vec()]].concat();
        let mut input = encode(&arguments);
        input.extend_from_slice(b"PING\r\n");
        for piece in [1, 2, 3, 7, 64, 999, 1000, 1001, 5000] {
            let (taken, rest) =
                feed_in_pieces(&input, piece, &RespLimits::default()).unwrap().unwrap();
            assert_eq!(taken, arguments, "pieces of {piece}");
            assert_eq!(rest, b"PING\r\n", "pieces of {piece}");
        }
    }

    #[test]
    fn a_bulk_filling_keeps_one_buffer_sized_by_its_header() {
        let limits = RespLimits::default();
        let (mut command, fed) =
            LargeCommand::start(b"*2\r\n$3\r\nSET\r\n$10\r\n0123", &limits).unwrap().unwrap();
        assert_eq!(fed, Fed { consumed: 22, complete: false });
        let capacity = command.filling.as_ref().map(|(data, _)| data.capacity());
        assert_eq!(capacity, Some(10));
        assert_eq!(
            command.feed(b"456789\r", &limits).unwrap(),
            Fed { consumed: 6, complete: false }
        );
        assert_eq!(command.feed(b"\r\n", &limits).unwrap(), Fed { consumed: 2, complete: true });
        assert_eq!(command.taken_bytes(), 30);
        assert_eq!(command.into_arguments(), vec![b"SET".to_vec(), b"0123456789".to_vec()]);
    }

    #[test]
    fn broken_input_gives_parse_commands_errors() {
        let limits = RespLimits { bulk_bytes_max: 8, array_length_max: 4, inline_bytes_max: 16 };
        let cases: [(&[u8], RespError); 5] = [
            (b"*5\r\n", RespError::InvalidMultibulkLength),
            (b"*x\r\n", RespError::InvalidMultibulkLength),
            (b"*2\r\n:1\r\n", RespError::ExpectedBulk { found: b':' }),
            (b"*2\r\n$9\r\n", RespError::InvalidBulkLength),
            (b"*2\r\n$2\r\nabX", RespError::MissingBulkTerminator),
        ];
        for (input, error) in cases {
            assert_eq!(LargeCommand::start(input, &limits).unwrap_err(), error);
            let mut arguments = Vec::new();
            assert_eq!(parse_command(input, &limits, &mut arguments).unwrap_err(), error);
        }
        let (mut command, _) = LargeCommand::start(b"*2\r\n$2\r\nab", &limits).unwrap().unwrap();
        assert_eq!(command.feed(b"\n", &limits).unwrap_err(), RespError::MissingBulkTerminator);
    }

    #[test]
    fn headers_without_arguments_are_left_to_parse_command() {
        let limits = RespLimits::default();
        for input in [&b"*0\r\n"[..], b"*-1\r\n", b"*2", b"*2\r"] {
            assert!(LargeCommand::start(input, &limits).unwrap().is_none());
        }
    }

    proptest! {
        /// Whatever the pieces, a large command takes the same arguments, bytes and errors as
        /// `parse_command` given all of the input at once.
        #[test]
        fn agrees_with_parse_command(
            arguments in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..6),
            piece in 1usize..50,
            corrupt in prop::option::of((any::<prop::sample::Index>(), any::<u8>())),
        ) {
            let limits =
                RespLimits { bulk_bytes_max: 32, array_length_max: 4, inline_bytes_max: 64 };
            let mut input = encode(&arguments);
            if let Some((index, byte)) = corrupt {
                let at = index.index(input.len());
                // Keep the leading '*': the caller starts a large command only on an array.
                if at > 0 {
                    input[at] = byte;
                }
            }
            let mut parsed = Vec::new();
            let whole = parse_command(&input, &limits, &mut parsed);
            let fed = feed_in_pieces(&input, piece, &limits);
            match whole {
                Ok(Parsed::Complete { consumed }) if !parsed.is_empty() => {
                    let expected: Vec<Vec<u8>> =
                        parsed.iter().map(|argument| argument.bytes(&input).to_vec()).collect();
                    let (taken, rest) = fed.unwrap().unwrap();
                    prop_assert_eq!(taken, expected);
                    prop_assert_eq!(&rest[..], &input[consumed..]);
                }
                Ok(Parsed::Complete { .. }) | Ok(Parsed::Incomplete) => {
                    prop_assert!(matches!(fed, Ok(None)), "{:?}", fed);
                }
                Err(error) => prop_assert_eq!(fed.unwrap_err(), error),
            }
        }
    }
}
