//! A subscriber's places in its channels: the one place nearly every subscriber has kept in
//! its slot, several in a box.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use holdfast_hub::Channel;

/// A subscriber's place in one of its channels.
pub(super) struct Place {
    pub channel: Arc<Channel>,
    /// The last sequence number it has.
    pub seq: u64,
    /// Where it is in the shard's member list of the channel (for O(1) removal).
    pub member: u32,
}

/// A subscriber's places: one kept inline, or any other number boxed. A boxed single place took
/// 24 B on the heap (jemalloc's 32 B class) for every one-channel subscriber, beside the 16 B of
/// the box's pointer; inline it takes 24 B of the slot and no allocation.
pub(super) enum Places {
    One(Place),
    /// None, or two and more.
    Many(Box<[Place]>),
}

impl Places {
    /// The places as a vector (to add to or split).
    pub fn into_vec(self) -> Vec<Place> {
        match self {
            Places::One(place) => vec![place],
            Places::Many(places) => places.into_vec(),
        }
    }
}

impl Default for Places {
    fn default() -> Places {
        // An empty box allocates nothing.
        Places::Many(Box::default())
    }
}

impl From<Vec<Place>> for Places {
    fn from(mut places: Vec<Place>) -> Places {
        match places.len() {
            1 => Places::One(places.pop().expect("one")),
            _ => Places::Many(places.into_boxed_slice()),
        }
    }
}

impl FromIterator<Place> for Places {
    fn from_iter<I: IntoIterator<Item = Place>>(iter: I) -> Places {
        Places::from(iter.into_iter().collect::<Vec<_>>())
    }
}

impl Deref for Places {
    type Target = [Place];

    fn deref(&self) -> &[Place] {
        match self {
            Places::One(place) => std::slice::from_ref(place),
            Places::Many(places) => places,
        }
    }
}

impl DerefMut for Places {
    fn deref_mut(&mut self) -> &mut [Place] {
        match self {
            Places::One(place) => std::slice::from_mut(place),
            Places::Many(places) => places,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_take_the_room_of_a_boxed_slice_and_one_is_inline() {
        // The subscriber slot counts on it (`a_subscriber_slot_stays_small`).
        assert_eq!(std::mem::size_of::<Places>(), 24);
        assert!(std::mem::size_of::<Places>() <= std::mem::size_of::<Place>());
        let none: Places = Vec::new().into();
        assert!(matches!(none, Places::Many(_)) && none.is_empty());
    }
}
