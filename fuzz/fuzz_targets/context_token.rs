//! A context token as a client sends it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dynamo_node::fuzzing::context_token(data));
