//! OTP-style supervision strategies for ractor actors.
