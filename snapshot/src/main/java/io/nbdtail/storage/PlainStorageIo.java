package io.nbdtail.storage;

import io.nbdtail.storage.nativeio.NativeIo;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.OpenOption;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.nio.file.attribute.FileAttribute;
import java.util.Set;

/** {@link StorageIo} as the JDK and {@link NativeIo} do it, with nothing in between. */
record PlainStorageIo(NativeIo nativeIo) implements StorageIo {
    static final PlainStorageIo DEFAULT = new PlainStorageIo(NativeIo.get());

    @Override
    public FileChannel open(final Path path, final Set<? extends OpenOption> options,
                            final FileAttribute<?>... attributes) throws IOException {
        return FileChannel.open(path, options, attributes);
    }

    @Override
    public void setLength(final Path path, final long length) throws IOException {
        try (RandomAccessFile file = new RandomAccessFile(path.toFile(), "rw")) {
            file.setLength(length);
            file.getFD().sync();
        }
    }

    @Override
    public void move(final Path from, final Path to) throws IOException {
        Files.move(from, to, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
    }

    @Override
    public void link(final Path link, final Path existing) throws IOException {
        Files.createLink(link, existing);
    }

    @Override
    public boolean deleteIfExists(final Path path) throws IOException {
        return Files.deleteIfExists(path);
    }

    @Override
    public void createDirectories(final Path dir) throws IOException {
        Files.createDirectories(dir);
    }

    @Override
    public void syncDirectory(final Path dir) throws IOException {
        try (FileChannel channel = FileChannel.open(dir, StandardOpenOption.READ)) {
            channel.force(true);
        }
    }
}
