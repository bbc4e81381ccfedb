//! The `dynamo-node` binary: see `dynamo_node::cli` for the subcommands and exit codes.

fn main() -> std::process::ExitCode {
    dynamo_node::cli::main()
}
