//! The `dynamo-node` binary: see `dynamo_node::cli` for the subcommands and exit codes.

// A node allocates and frees small buffers on every request from many threads; glibc's
// malloc spent about a fifth of the node's CPU on them (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    dynamo_node::cli::main()
}
