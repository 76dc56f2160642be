//! The in-flight table of one connection: calls waiting for their reply, by sequence number.
//!
//! Sequence numbers are handed out in order, so the calls in flight at any time have nearly
//! consecutive numbers: a table indexed by the number's low bits holds them with neither
//! hashing nor probing, and a number is only ever taken where its slot is free. The table
//! doubles when it is half full (at 65,536 slots every number has its own).

/// Values (calls) by sequence number; the operations of a map, on a slot table.
pub(super) struct InFlight<V> {
    /// `slots.len()` is a power of two; `seq` lives at `seq & (len - 1)`, tagged with itself.
    slots: Vec<Option<(u16, V)>>,
    len: usize,
}

/// Slots of a new table: 8 of a proxy's pending calls (120 bytes each) stay within what
/// glibc's per-thread cache serves (1,032 bytes); 16 took the slow path, about 600
/// instructions of every connect. A connection with more calls in flight grows the table once
/// or twice more in its life.
const FIRST: usize = 8;
/// Slots of the largest table: one per sequence number.
const ALL: usize = 1 << 16;

impl<V> Default for InFlight<V> {
    fn default() -> Self {
        InFlight {
            slots: Vec::new(),
            len: 0,
        }
    }
}

impl<V> InFlight<V> {
    fn index(&self, seq: u16) -> usize {
        usize::from(seq) & (self.slots.len() - 1)
    }

    /// How many values are in.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// True when there are none.
    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The value of `seq`.
    pub(super) fn get(&self, seq: &u16) -> Option<&V> {
        if self.slots.is_empty() {
            return None;
        }
        match &self.slots[self.index(*seq)] {
            Some((s, v)) if s == seq => Some(v),
            _ => None,
        }
    }

    /// The value of `seq`, to change.
    pub(super) fn get_mut(&mut self, seq: &u16) -> Option<&mut V> {
        if self.slots.is_empty() {
            return None;
        }
        let i = self.index(*seq);
        match &mut self.slots[i] {
            Some((s, v)) if s == seq => Some(v),
            _ => None,
        }
    }

    /// True when `seq` has a value.
    pub(super) fn contains_key(&self, seq: &u16) -> bool {
        self.get(seq).is_some()
    }

    /// Takes the value of `seq` out.
    pub(super) fn remove(&mut self, seq: &u16) -> Option<V> {
        if self.slots.is_empty() {
            return None;
        }
        let i = self.index(*seq);
        match &self.slots[i] {
            Some((s, _)) if s == seq => {
                self.len -= 1;
                self.slots[i].take().map(|(_, v)| v)
            }
            _ => None,
        }
    }

    /// Stores `value` for `seq`, replacing the value it had.
    pub(super) fn insert(&mut self, seq: u16, value: V) {
        if self.slots.is_empty() {
            self.slots.resize_with(FIRST, || None);
        } else if (self.len + 1) * 2 > self.slots.len() && self.slots.len() < ALL {
            self.grow();
        }
        loop {
            let i = self.index(seq);
            match &mut self.slots[i] {
                Some((s, v)) if *s == seq => {
                    *v = value;
                    return;
                }
                // Another number's slot: only while the table is small (see `free_seq`).
                Some(_) => self.grow(),
                slot @ None => {
                    *slot = Some((seq, value));
                    self.len += 1;
                    return;
                }
            }
        }
    }

    /// Doubles the table, moving every value to its slot in the larger one.
    fn grow(&mut self) {
        let size = (self.slots.len() * 2).clamp(FIRST, ALL);
        let old = std::mem::take(&mut self.slots);
        self.slots.resize_with(size, || None);
        for (seq, value) in old.into_iter().flatten() {
            let i = self.index(seq);
            self.slots[i] = Some((seq, value));
        }
    }

    /// Keeps only the values `keep` says yes to.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&u16, &mut V) -> bool) {
        for slot in &mut self.slots {
            if let Some((seq, value)) = slot {
                if !keep(seq, value) {
                    *slot = None;
                    self.len -= 1;
                }
            }
        }
    }

    /// Every value, in no particular order.
    pub(super) fn values(&self) -> impl Iterator<Item = &V> {
        self.slots.iter().flatten().map(|(_, v)| v)
    }

    /// The first sequence number at or after `start` that is not 0 and whose slot is free, so
    /// that [`insert`](Self::insert) puts it in place without growing the table; `None` when
    /// every number but 0 is in.
    ///
    /// Numbers in use are skipped like any whose slot is taken. Below 65,536 slots the table
    /// is at most half full, so one is found within a few steps; at 65,536 every number has
    /// its own slot.
    pub(super) fn free_seq(&self, start: u16) -> Option<u16> {
        if self.len >= usize::from(u16::MAX) {
            return None;
        }
        let mut seq = start;
        loop {
            if seq != 0 && (self.slots.is_empty() || self.slots[self.index(seq)].is_none()) {
                return Some(seq);
            }
            seq = seq.wrapping_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn works_as_a_map_by_sequence_number() {
        let mut t = InFlight::default();
        assert!(t.is_empty() && t.get(&1).is_none() && t.remove(&1).is_none());
        t.insert(1, "a");
        t.insert(17, "b");
        assert_eq!(
            (t.len(), t.get(&1), t.get(&17)),
            (2, Some(&"a"), Some(&"b"))
        );
        assert!(!t.is_empty());
        // 33 shares 1's slot in a table of 32 (where 1 and 17 put it): it is not 1.
        assert_eq!(t.slots.len(), 32);
        assert!(
            !t.contains_key(&33) && t.get_mut(&33).is_none(),
            "a number sharing a slot is not the one in it"
        );
        assert_eq!(t.remove(&33), None);
        assert_eq!((t.len(), t.get(&1)), (2, Some(&"a")), "removing 33 left 1");
        t.insert(1, "c");
        assert_eq!((t.len(), t.get(&1)), (2, Some(&"c")));
        *t.get_mut(&17).unwrap() = "d";
        assert_eq!(t.remove(&17), Some("d"));
        assert_eq!(t.remove(&17), None);
        assert_eq!(t.len(), 1);
        t.retain(|_, _| false);
        assert!(t.is_empty() && t.values().next().is_none());
    }

    #[test]
    fn holds_any_set_of_numbers_and_grows_to_one_slot_each() {
        let mut t = InFlight::default();
        // Numbers that collide in every table of up to 1,024 slots.
        let seqs: Vec<u16> = (1..=63u16).map(|k| k * 1024).collect();
        for &s in &seqs {
            t.insert(s, u32::from(s));
        }
        for &s in &seqs {
            assert_eq!(t.get(&s), Some(&u32::from(s)), "{s}");
        }
        assert_eq!(t.values().count(), seqs.len());
        // Every number at once (but 0): the table holds them all.
        let mut all = InFlight::default();
        for s in 1..=u16::MAX {
            let seq = all.free_seq(s);
            assert_eq!(seq, Some(s), "free in order");
            all.insert(s, ());
        }
        assert_eq!(all.len(), 65_535);
        assert_eq!(all.free_seq(1), None, "every number is in use");
        all.remove(&40_000);
        assert_eq!(all.free_seq(1), Some(40_000));
        all.insert(40_000, ());
        all.retain(|s, _| s % 2 == 0);
        assert_eq!(all.len(), 32_767);
        assert!(all.contains_key(&2) && !all.contains_key(&3));
    }

    /// The table doubles before it is more than half full, which keeps `free_seq`'s search
    /// short.
    #[test]
    fn the_table_is_never_more_than_half_full() {
        let mut t = InFlight::default();
        for seq in 1..=2_000u16 {
            t.insert(seq, ());
            assert!(
                t.len() * 2 <= t.slots.len(),
                "{} in {} slots",
                t.len(),
                t.slots.len()
            );
        }
        // And no more than it needs: 2,000 values in 4,096 slots.
        assert_eq!(t.slots.len(), 4_096);
    }

    #[test]
    fn free_seq_skips_zero_and_numbers_in_use_and_wraps() {
        let mut t = InFlight::default();
        assert_eq!(t.free_seq(0), Some(1));
        t.insert(1, ());
        t.insert(2, ());
        assert_eq!(t.free_seq(1), Some(3));
        t.insert(u16::MAX, ());
        assert_eq!(
            t.free_seq(u16::MAX),
            Some(3),
            "wraps past 65535, skipping 0 and taken numbers"
        );
        // A number whose slot another holds is skipped too, so inserting never grows.
        let size = t.slots.len();
        let seq = t.free_seq(1 + size as u16).unwrap();
        assert_ne!(seq, 1 + size as u16);
        t.insert(seq, ());
        assert_eq!(t.slots.len(), size);
    }

    #[test]
    fn calls_in_flight_in_order_stay_in_a_small_table() {
        // 64 calls in flight for a long time, numbers taken in order, the oldest done first.
        let mut t = InFlight::default();
        let mut next = 1u16;
        let mut live = std::collections::VecDeque::new();
        for _ in 0..200_000 {
            if live.len() == 64 {
                let done: u16 = live.pop_front().unwrap();
                assert!(t.remove(&done).is_some());
            }
            let seq = t.free_seq(next).unwrap();
            next = seq.wrapping_add(1);
            t.insert(seq, ());
            live.push_back(seq);
        }
        assert_eq!(t.len(), 64);
        assert!(t.slots.len() <= 256, "{} slots", t.slots.len());
    }
}
