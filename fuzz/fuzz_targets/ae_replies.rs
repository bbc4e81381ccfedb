//! Anti-entropy replies fed to a round.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dynamo_node::fuzzing::ae_replies(data));
