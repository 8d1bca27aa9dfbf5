//! Small filesystems mounted for a test (needs root; CI runs as root), to fill a disk.

use std::process::Command;

/// A small filesystem mounted on a directory, unmounted when dropped.
pub struct SmallDisk {
    path: std::path::PathBuf,
}

impl SmallDisk {
    /// A tmpfs of `size` mounted on `path`.
    pub fn mount(path: &std::path::Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .expect("mount runs");
        assert!(status.success(), "mounting a tmpfs needs root (CI runs as root)");
        SmallDisk { path: path.to_path_buf() }
    }

    /// An ext4 filesystem of `size` in the image file `image`, mounted through a loop device.
    pub fn mount_ext4(path: &std::path::Path, image: &std::path::Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(path).unwrap();
        let run = |command: &mut Command| {
            let status = command.status().expect("command runs");
            assert!(status.success(), "{command:?} failed (a loop mount needs root)");
        };
        run(Command::new("truncate").args(["-s", size]).arg(image));
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(image));
        run(Command::new("mount").args(["-o", "loop"]).arg(image).arg(path));
        SmallDisk { path: path.to_path_buf() }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}
