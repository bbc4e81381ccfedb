//! A replica batch, decoded and served.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dynamo_node::fuzzing::replica_batch(data));
