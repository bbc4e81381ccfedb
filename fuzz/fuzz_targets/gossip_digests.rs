//! Gossip digests merged into a membership.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dynamo_node::fuzzing::gossip_digests(data));
