//! The `dynamo-node` command line: daemon, local cluster, and client commands.
