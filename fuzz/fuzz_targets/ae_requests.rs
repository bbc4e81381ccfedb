//! Anti-entropy and purge requests, answered.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dynamo_node::fuzzing::ae_requests(data));
