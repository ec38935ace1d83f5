//! File generation identity: device + inode + a hash of the first bytes.
