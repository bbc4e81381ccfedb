//! HTTP requests through the router.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dynamo_node::fuzzing::http_bytes(data));
