//! Which subscribers of a shard are in which channel: a member list per channel, in which each
//! subscriber knows its own index ([`Place::member`]), so joining and leaving are O(1) and a
//! round walks a list without copying it; and the channel's `subscriber_shards` bit for this
//! shard, set while the list is not empty, so publishes wake only shards that have members.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use holdfast_hub::Channel;

use super::{Place, Shard};

impl Shard {
    /// Adds subscriber `index` to `channel` (whose last sequence number it has is `seq`).
    pub(super) fn join(&mut self, index: usize, channel: Arc<Channel>, seq: u64) -> Place {
        let members = self.by_channel.entry(channel.id).or_default();
        if members.is_empty() {
            // Before this subscriber's first read of the history (see `Channel::subscriber_shards`).
            channel.subscriber_shards.fetch_or(1 << self.id, Ordering::SeqCst);
        }
        members.push(index as u32);
        channel.subscribers.fetch_add(1, Ordering::Relaxed);
        Place { member: (members.len() - 1) as u32, channel, seq }
    }

    /// Takes subscriber `index` out of `place`'s channel: the last member moves into its spot and
    /// learns its new index.
    pub(super) fn leave(&mut self, index: usize, place: &Place) {
        let id = place.channel.id;
        place.channel.subscribers.fetch_sub(1, Ordering::Relaxed);
        let Some(members) = self.by_channel.get_mut(&id) else { return };
        let spot = place.member as usize;
        if members.get(spot) != Some(&(index as u32)) {
            debug_assert!(false, "subscriber {index} is not member {spot} of channel {id}");
            return;
        }
        members.swap_remove(spot);
        if let Some(&moved) = members.get(spot) {
            let moved = self.slots.get_mut(moved as usize).and_then(Option::as_mut);
            if let Some(place) = moved.and_then(|sub| sub.places.iter_mut().find(|p| p.channel.id == id)) {
                place.member = spot as u32;
            }
        } else if members.is_empty() {
            self.by_channel.remove(&id);
            place.channel.subscriber_shards.fetch_and(!(1 << self.id), Ordering::SeqCst);
        }
    }

    /// How many subscribers of this shard are in a channel.
    pub(super) fn members_of(&self, channel_id: u64) -> usize {
        self.by_channel.get(&channel_id).map_or(0, Vec::len)
    }

    /// Calls `visit` for each member of a channel. `visit` may remove the member it is given
    /// (close it, or take it out of the channel): the one moved into its spot is visited next.
    pub(super) fn for_each_member(&mut self, channel_id: u64, mut visit: impl FnMut(&mut Shard, usize)) {
        let mut spot = 0;
        loop {
            let Some(&index) = self.by_channel.get(&channel_id).and_then(|m| m.get(spot)) else { return };
            visit(self, index as usize);
            if self.by_channel.get(&channel_id).and_then(|m| m.get(spot)) == Some(&index) {
                spot += 1;
            }
        }
    }
}
