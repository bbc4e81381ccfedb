//! Stored records, the status file and hint records.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dynamo_node::fuzzing::stored_record(data));
