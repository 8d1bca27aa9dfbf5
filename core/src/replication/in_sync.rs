//! The in-sync set of a partition as it is recorded: which members hold every acknowledged
//! write, under which leader epoch, at which version (`isr_epoch`).
//!
//! A leader changes its set only by recording a new version on every member of the new set
//! before acting on it, and a promotion asks the members it reaches for the newest version
//! any of them recorded. Versions compare by `(leader_epoch, isr_epoch)`.

use std::fmt;

use crate::ids::Epoch;

/// Members a set holds at most: a leader and up to four followers, with room to spare.
pub const IN_SYNC_MEMBERS_MAX: usize = 16;
/// Longest member name or address in an encoded set.
const FIELD_BYTES_MAX: usize = 1024;

/// A member of a set: its name and its peer address, so that a member promoting itself knows
/// whom to ask.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Member {
    pub name: String,
    pub address: String,
}

/// One recorded version of a partition's in-sync set. `members` includes the leader and is
/// sorted by name, each once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InSyncSet {
    pub leader_epoch: Epoch,
    pub isr_epoch: u64,
    /// The name of the leader that recorded this version.
    pub leader: String,
    pub members: Vec<Member>,
}

/// Why bytes are not an encoded set.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed in-sync set: {0}")]
pub struct InSyncSetError(pub String);

impl InSyncSet {
    /// A set recorded by `leader` at `leader_epoch`, version `isr_epoch`.
    ///
    /// # Panics
    ///
    /// If `members` lacks the leader or holds a name twice.
    #[must_use]
    pub fn new(
        leader_epoch: Epoch,
        isr_epoch: u64,
        leader: &str,
        mut members: Vec<Member>,
    ) -> InSyncSet {
        members.sort();
        assert!(members.windows(2).all(|pair| pair[0].name != pair[1].name), "a name twice");
        assert!(members.iter().any(|member| member.name == leader), "the leader is a member");
        InSyncSet { leader_epoch, isr_epoch, leader: leader.to_string(), members }
    }

    /// The order of versions: a later leader's set is newer than any of an earlier leader's.
    #[must_use]
    pub fn version(&self) -> (Epoch, u64) {
        (self.leader_epoch, self.isr_epoch)
    }

    #[must_use]
    pub fn contains(&self, name: &str) -> bool {
        self.members.iter().any(|member| member.name == name)
    }

    /// Names of the members other than the leader.
    pub fn followers(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(move |member| member.name != self.leader)
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.members.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Binary form: u64 leader epoch, u64 isr epoch, u16 leader index, u16 member count, then
    /// per member u16 name length, name, u16 address length, address (little-endian, UTF-8).
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(32 + self.members.len() * 48);
        bytes.extend_from_slice(&self.leader_epoch.0.to_le_bytes());
        bytes.extend_from_slice(&self.isr_epoch.to_le_bytes());
        let leader = self.members.iter().position(|member| member.name == self.leader);
        let leader = u16::try_from(leader.expect("the leader is a member")).expect("few members");
        bytes.extend_from_slice(&leader.to_le_bytes());
        let count = u16::try_from(self.members.len()).expect("few members");
        bytes.extend_from_slice(&count.to_le_bytes());
        for member in &self.members {
            put_text(&mut bytes, &member.name);
            put_text(&mut bytes, &member.address);
        }
        bytes
    }

    /// Parses [`encode`](Self::encode)'s form from the start of `bytes`; returns the set and
    /// the bytes it took.
    ///
    /// # Errors
    ///
    /// When the bytes are short, a count or length is out of bounds, a text is not UTF-8, or
    /// the members are not sorted and distinct.
    pub fn decode(bytes: &[u8]) -> Result<(InSyncSet, usize), InSyncSetError> {
        let mut reader = Reader { bytes, offset: 0 };
        let leader_epoch = Epoch(reader.u64()?);
        let isr_epoch = reader.u64()?;
        let leader = usize::from(reader.u16()?);
        let count = usize::from(reader.u16()?);
        if count == 0 || count > IN_SYNC_MEMBERS_MAX || leader >= count {
            return Err(InSyncSetError(format!("{count} members, leader at {leader}")));
        }
        let mut members = Vec::with_capacity(count);
        for _ in 0..count {
            let name = reader.text()?;
            let address = reader.text()?;
            members.push(Member { name, address });
        }
        if !members.windows(2).all(|pair| pair[0].name < pair[1].name) {
            return Err(InSyncSetError("members not sorted by name, or repeated".into()));
        }
        let leader = members[leader].name.clone();
        Ok((InSyncSet { leader_epoch, isr_epoch, leader, members }, reader.offset))
    }
}

impl fmt::Display for InSyncSet {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.members.iter().map(|member| member.name.as_str()).collect();
        write!(
            formatter,
            "{{{}}} (leader {} at epoch {}, isr_epoch {})",
            names.join(", "),
            self.leader,
            self.leader_epoch,
            self.isr_epoch
        )
    }
}

fn put_text(bytes: &mut Vec<u8>, text: &str) {
    let length = u16::try_from(text.len().min(FIELD_BYTES_MAX)).expect("bounded");
    bytes.extend_from_slice(&length.to_le_bytes());
    bytes.extend_from_slice(&text.as_bytes()[..usize::from(length)]);
}

struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl Reader<'_> {
    fn take(&mut self, count: usize) -> Result<&[u8], InSyncSetError> {
        let end = self.offset.checked_add(count).filter(|end| *end <= self.bytes.len());
        let end = end.ok_or_else(|| InSyncSetError("shorter than its fields".into()))?;
        let taken = &self.bytes[self.offset..end];
        self.offset = end;
        Ok(taken)
    }

    fn u16(&mut self) -> Result<u16, InSyncSetError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("two bytes")))
    }

    fn u64(&mut self) -> Result<u64, InSyncSetError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("eight bytes")))
    }

    fn text(&mut self) -> Result<String, InSyncSetError> {
        let length = usize::from(self.u16()?);
        if length == 0 || length > FIELD_BYTES_MAX {
            return Err(InSyncSetError(format!("a text of {length} bytes")));
        }
        let bytes = self.take(length)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| InSyncSetError("text is not UTF-8".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn member(name: &str) -> Member {
        Member { name: name.into(), address: format!("127.0.0.1:{}", name.len()) }
    }

    #[test]
    fn sets_round_trip_and_order_by_leader_epoch_first() {
        let set = InSyncSet::new(Epoch(3), 7, "harry", vec![member("ron"), member("harry")]);
        assert_eq!(set.members[0].name, "harry");
        let mut bytes = set.encode();
        bytes.extend_from_slice(b"after");
        assert_eq!(InSyncSet::decode(&bytes), Ok((set.clone(), bytes.len() - 5)));
        let later = InSyncSet::new(Epoch(4), 0, "ron", vec![member("ron")]);
        assert!(later.version() > set.version());
        assert_eq!(set.followers().map(|member| member.name.as_str()).collect::<Vec<_>>(), ["ron"]);
        assert_eq!(set.to_string(), "{harry, ron} (leader harry at epoch 3, isr_epoch 7)");
    }

    #[test]
    fn malformed_sets_are_refused() {
        let set = InSyncSet::new(Epoch(1), 1, "a", vec![member("a"), member("b")]);
        let bytes = set.encode();
        for cut in 0..bytes.len() {
            assert!(InSyncSet::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut no_members = bytes.clone();
        no_members[18..20].copy_from_slice(&0u16.to_le_bytes());
        assert!(InSyncSet::decode(&no_members).is_err());
        let mut bad_leader = bytes.clone();
        bad_leader[16..18].copy_from_slice(&5u16.to_le_bytes());
        assert!(InSyncSet::decode(&bad_leader).is_err());
        let unsorted = InSyncSet { members: vec![member("b"), member("a")], ..set.clone() };
        assert!(InSyncSet::decode(&unsorted.encode()).is_err());
    }

    proptest! {
        #[test]
        fn any_bytes_decode_or_fail_without_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..96)
        ) {
            let _ = InSyncSet::decode(&bytes);
        }
    }
}
