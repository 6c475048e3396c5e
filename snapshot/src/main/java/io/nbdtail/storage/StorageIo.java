package io.nbdtail.storage;

import io.nbdtail.storage.nativeio.NativeIo;

import java.io.IOException;
import java.nio.channels.FileChannel;
import java.nio.file.OpenOption;
import java.nio.file.Path;
import java.nio.file.attribute.FileAttribute;
import java.util.Set;

/**
 * Every way the storage layer changes the files of a volume: data files (through {@link #nativeIo()} and
 * {@link #open}), cluster maps, the manifest, and the names of those files (create, rename, link, unlink and the
 * directory {@code fsync} that makes a name durable).
 *
 * <p>Production uses {@link #of(NativeIo)}, which is the JDK and {@link NativeIo} and nothing else: the objects it
 * returns are the plain ones, so the data path costs nothing extra. The power-cut tests plug in an implementation
 * that records each change and each sync, to build the states a disc may be in after a power cut
 * ({@code docs/testing.md}, C3 and C10).
 */
public interface StorageIo {
    /** The system calls for data files; what goes through it is recorded like everything else. */
    NativeIo nativeIo();

    /** {@link FileChannel#open(Path, Set, FileAttribute[])}; with {@code CREATE}, a new name to make durable. */
    FileChannel open(Path path, Set<? extends OpenOption> options, FileAttribute<?>... attributes) throws IOException;

    /** {@code ftruncate(path, length)} then {@code fsync}: a sparse file of that size, durably. */
    void setLength(Path path, long length) throws IOException;

    /** {@code rename(from, to)}, replacing {@code to} atomically. Durable once the directory is synced. */
    void move(Path from, Path to) throws IOException;

    /** {@code link(existing, link)}: a second name for the same file. Durable once the directory is synced. */
    void link(Path link, Path existing) throws IOException;

    /** {@code unlink(path)} if it exists. */
    boolean deleteIfExists(Path path) throws IOException;

    /** {@code mkdir -p}. */
    void createDirectories(Path dir) throws IOException;

    /** {@code fsync} of a directory: the names created, renamed, linked or removed in it are durable. */
    void syncDirectory(Path dir) throws IOException;

    /** The JDK and {@code nativeIo}. */
    static StorageIo of(final NativeIo nativeIo) {
        return new PlainStorageIo(nativeIo);
    }

    /** The JDK and the platform's {@link NativeIo}. */
    static StorageIo get() {
        return PlainStorageIo.DEFAULT;
    }
}
