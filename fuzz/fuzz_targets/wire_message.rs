//! One frame of every peer message type and answer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dynamo_node::fuzzing::wire_message(data));
