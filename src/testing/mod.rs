//! `TestCluster`: node processes for tests (yours and ours).
