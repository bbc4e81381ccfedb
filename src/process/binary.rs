//! Finding the `dynamo-node` executable to start nodes with.

use std::path::{Path, PathBuf};

use super::ProcessError;

/// File name of the node executable.
pub const BINARY_NAME: &str = "dynamo-node";
/// Environment variable naming the node executable, when no explicit path is given.
pub const BINARY_ENV: &str = "DYNAMO_NODE_BIN";

/// The node executable: `explicit` if given, else `$DYNAMO_NODE_BIN`, else `dynamo-node` next
/// to the running executable or in its parent directory (tests run from `target/debug/deps/`,
/// the binary is `target/debug/dynamo-node`).
pub fn locate_node_binary(explicit: Option<&Path>) -> Result<PathBuf, ProcessError> {
    let env = std::env::var_os(BINARY_ENV).map(PathBuf::from);
    let exe = std::env::current_exe().ok();
    locate_in(explicit, env.as_deref(), exe.as_deref())
}

/// The lookup itself, with the environment passed in so that it can be tested.
fn locate_in(
    explicit: Option<&Path>,
    env: Option<&Path>,
    current_exe: Option<&Path>,
) -> Result<PathBuf, ProcessError> {
    // An explicit choice that is wrong must fail, not fall back to some other binary.
    if let Some(path) = explicit.or(env) {
        return if path.is_file() {
            Ok(path.to_path_buf())
        } else {
            Err(ProcessError::BinaryNotFound {
                looked: vec![path.to_path_buf()],
            })
        };
    }
    let mut looked = Vec::new();
    let dir = current_exe.and_then(Path::parent);
    for candidate_dir in [dir, dir.and_then(Path::parent)].into_iter().flatten() {
        let candidate = candidate_dir.join(BINARY_NAME);
        if candidate.is_file() {
            return Ok(candidate);
        }
        looked.push(candidate);
    }
    Err(ProcessError::BinaryNotFound { looked })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("dynamo-binary-test-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("debug/deps")).unwrap();
        dir
    }

    #[test]
    fn finds_the_binary_in_the_parent_of_deps() {
        let dir = scratch("parent");
        let bin = dir.join("debug").join(BINARY_NAME);
        std::fs::write(&bin, b"").unwrap();
        let exe = dir.join("debug/deps/cli_cluster-1234");
        assert_eq!(locate_in(None, None, Some(&exe)).unwrap(), bin);
        // Next to the executable wins over the parent.
        let sibling = dir.join("debug/deps").join(BINARY_NAME);
        std::fs::write(&sibling, b"").unwrap();
        assert_eq!(locate_in(None, None, Some(&exe)).unwrap(), sibling);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn explicit_and_env_paths_win_and_do_not_fall_back() {
        let dir = scratch("explicit");
        let bin = dir.join("debug").join(BINARY_NAME);
        std::fs::write(&bin, b"").unwrap();
        let exe = dir.join("debug/deps/t");
        let other = dir.join("elsewhere");
        std::fs::write(&other, b"").unwrap();
        assert_eq!(locate_in(Some(&other), None, Some(&exe)).unwrap(), other);
        assert_eq!(locate_in(None, Some(&other), Some(&exe)).unwrap(), other);
        let missing = dir.join("missing");
        let err = locate_in(None, Some(&missing), Some(&exe)).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_error_names_every_place_looked_at() {
        let dir = scratch("absent");
        let exe = dir.join("debug/deps/t");
        let err = locate_in(None, None, Some(&exe)).unwrap_err();
        let msg = err.to_string();
        let next_to = dir.join("debug/deps").join(BINARY_NAME);
        let parent = dir.join("debug").join(BINARY_NAME);
        assert!(msg.contains(&next_to.display().to_string()), "{msg}");
        assert!(msg.contains(&parent.display().to_string()), "{msg}");
        assert!(msg.contains(BINARY_ENV), "{msg}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
