package io.nbdtail.storage;

import io.nbdtail.storage.nativeio.NativeIo;
import io.nbdtail.storage.nativeio.NativeIoException;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteBuffer;
import java.nio.MappedByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.channels.FileLock;
import java.nio.channels.ReadableByteChannel;
import java.nio.channels.WritableByteChannel;
import java.nio.file.Files;
import java.nio.file.OpenOption;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.nio.file.attribute.FileAttribute;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.Set;
import java.util.TreeMap;
import java.util.function.IntPredicate;
import java.util.stream.Stream;

/**
 * A {@link StorageIo} for power-cut tests (reliability.md C3, C10), in the manner of dm-log-writes: every change
 * under {@code root} goes to the real files and is also logged, with its bytes, as one {@link Op}: writes,
 * truncations, punched or zeroed ranges, {@code fdatasync}/{@code fsync}, creates, renames, links, unlinks and
 * directory {@code fsync}s.
 *
 * <p>{@link #build} then writes the files a disc may hold after a power cut at any point of the log, under the
 * guarantees a Linux file system gives and no more:
 * <ul>
 * <li>a file's data is durable once an {@code fdatasync} or {@code fsync} of that file completed;</li>
 * <li>a name (create, rename, link, unlink, mkdir) is durable once its directory was synced;</li>
 * <li>anything else may or may not have reached the disc, in any subset (kept in order), and a write may tear at
 * 512-byte sectors.</li>
 * </ul>
 * Files that exist when the recorder is made count as durable. The live namespace is tracked by path, so a file
 * changed outside this class (a gap in the abstraction) fails loudly instead of being missed.
 */
public final class PowerCutRecorder implements StorageIo {
    public static final int SECTOR = 512;

    /** One logged change. {@code inode} numbers files; a directory is its path relative to the root. */
    public sealed interface Op {
    }

    public record Write(int inode, long offset, byte[] bytes) implements Op {
    }

    /** A punched hole or zeroed range: reads as zeros. */
    public record Zero(int inode, long offset, long length) implements Op {
    }

    public record Truncate(int inode, long length) implements Op {
    }

    /** A completed {@code fdatasync} or {@code fsync} of a file. */
    public record Sync(int inode) implements Op {
    }

    /** A new name in {@code dir}: a file ({@code inode >= 0}) or a directory ({@code inode == DIRECTORY}). */
    public record Create(String dir, String name, int inode) implements Op {
    }

    public record Rename(String dir, String from, String to) implements Op {
    }

    public record Unlink(String dir, String name) implements Op {
    }

    /** A completed {@code fsync} of a directory. */
    public record SyncDir(String dir) implements Op {
    }

    private static final int DIRECTORY = -1;

    private final StorageIo real = StorageIo.get();
    private final Path root;
    private final NativeIo nativeIo = new RecordingNativeIo();
    /** Contents and names as they were when recording started; all durable. */
    private final Map<Integer, Content> baseContents = new HashMap<>();
    private final Map<String, Map<String, Integer>> baseEntries = new HashMap<>();
    /** The live namespace: relative path to inode (or {@link #DIRECTORY}). */
    private final Map<String, Integer> live = new HashMap<>();
    private final Map<Integer, Integer> fds = new HashMap<>();
    private final List<Op> ops = new ArrayList<>();
    private int nextInode;

    public PowerCutRecorder(final Path root) throws IOException {
        this.root = root.toAbsolutePath().normalize();
        baseEntries.put("", new HashMap<>());
        try (Stream<Path> walk = Files.walk(this.root)) {
            for (final Path p : (Iterable<Path>) walk::iterator) {
                if (p.equals(this.root)) {
                    continue;
                }
                final String rel = rel(p);
                final int inode = Files.isDirectory(p) ? DIRECTORY : nextInode++;
                if (inode == DIRECTORY) {
                    baseEntries.put(rel, new HashMap<>());
                } else {
                    baseContents.put(inode, Content.of(p));
                }
                baseEntries.get(parent(rel)).put(name(rel), inode);
                live.put(rel, inode);
            }
        }
    }

    /** Changes logged so far; a cut at {@code n} keeps the first {@code n}. */
    public synchronized int size() {
        return ops.size();
    }

    public synchronized List<Op> ops() {
        return List.copyOf(ops);
    }

    private synchronized void log(final Op op) {
        ops.add(op);
    }

    // ------------------------------------------------------------------------------------------------ paths

    private String rel(final Path p) {
        final Path abs = p.toAbsolutePath().normalize();
        return abs.startsWith(root) ? root.relativize(abs).toString() : null;
    }

    private static String parent(final String rel) {
        final int slash = rel.lastIndexOf('/');
        return slash < 0 ? "" : rel.substring(0, slash);
    }

    private static String name(final String rel) {
        return rel.substring(rel.lastIndexOf('/') + 1);
    }

    private synchronized int inodeOf(final String rel) {
        final Integer inode = live.get(rel);
        if (inode == null || inode == DIRECTORY) {
            throw new IllegalStateException(rel + " was not made through the recorder: a file change outside"
                + " StorageIo, which a power-cut test cannot see");
        }
        return inode;
    }

    // ------------------------------------------------------------------------------------------------ StorageIo

    @Override
    public NativeIo nativeIo() {
        return nativeIo;
    }

    @Override
    public FileChannel open(final Path path, final Set<? extends OpenOption> options,
                            final FileAttribute<?>... attributes) throws IOException {
        final String rel = rel(path);
        if (rel == null) {
            return real.open(path, options, attributes);
        }
        final boolean existed = Files.exists(path);
        final FileChannel channel = real.open(path, options, attributes);
        final int inode;
        synchronized (this) {
            if (!existed) {
                inode = nextInode++;
                live.put(rel, inode);
                log(new Create(parent(rel), name(rel), inode));
            } else {
                inode = inodeOf(rel);
                if (options.contains(StandardOpenOption.TRUNCATE_EXISTING) && options.contains(StandardOpenOption.WRITE)) {
                    log(new Truncate(inode, 0));
                }
            }
        }
        return new RecordingChannel(channel, inode);
    }

    @Override
    public void setLength(final Path path, final long length) throws IOException {
        real.setLength(path, length);
        final String rel = rel(path);
        if (rel != null) {
            final int inode = inodeOf(rel);
            log(new Truncate(inode, length));
            log(new Sync(inode));
        }
    }

    @Override
    public void move(final Path from, final Path to) throws IOException {
        real.move(from, to);
        final String a = rel(from);
        final String b = rel(to);
        if (a != null) {
            if (!parent(a).equals(parent(b))) {
                throw new IllegalStateException("rename across directories is not modelled: " + a + " -> " + b);
            }
            synchronized (this) {
                live.put(b, live.remove(a));
                log(new Rename(parent(a), name(a), name(b)));
            }
        }
    }

    @Override
    public void link(final Path link, final Path existing) throws IOException {
        real.link(link, existing);
        final String rel = rel(link);
        if (rel != null) {
            synchronized (this) {
                final int inode = inodeOf(rel(existing));
                live.put(rel, inode);
                log(new Create(parent(rel), name(rel), inode));
            }
        }
    }

    @Override
    public boolean deleteIfExists(final Path path) throws IOException {
        final boolean deleted = real.deleteIfExists(path);
        final String rel = rel(path);
        if (deleted && rel != null) {
            synchronized (this) {
                live.remove(rel);
                log(new Unlink(parent(rel), name(rel)));
            }
        }
        return deleted;
    }

    @Override
    public void createDirectories(final Path dir) throws IOException {
        final String rel = rel(dir);
        if (rel == null) {
            real.createDirectories(dir);
            return;
        }
        final List<String> missing = new ArrayList<>();
        for (String d = rel; !d.isEmpty() && !live.containsKey(d); d = parent(d)) {
            missing.addFirst(d);
        }
        real.createDirectories(dir);
        synchronized (this) {
            for (final String d : missing) {
                live.put(d, DIRECTORY);
                log(new Create(parent(d), name(d), DIRECTORY));
            }
        }
    }

    @Override
    public void syncDirectory(final Path dir) throws IOException {
        real.syncDirectory(dir);
        final String rel = rel(dir);
        if (rel != null) {
            log(new SyncDir(rel));
        }
    }

    // ------------------------------------------------------------------------------------------------ crash states

    /** How each change a cut leaves unsynced reaches the disc. */
    public interface Chooser {
        /** {@code true} if unsynced change {@code index} reached the disc. */
        boolean applied(int index, Op op);

        /** For an applied write: which of its sectors reached the disc ({@code null}: all of them). */
        IntPredicate sectors(int index, Write write);
    }

    /** Nothing unsynced reached the disc: dm-log-writes' replay to a flush point. */
    public static final Chooser NOTHING_UNSYNCED = new Chooser() {
        @Override
        public boolean applied(final int index, final Op op) {
            return false;
        }

        @Override
        public IntPredicate sectors(final int index, final Write write) {
            return null;
        }
    };

    /** A random subset of the unsynced changes, a third of the applied writes torn at random sectors. */
    public static Chooser random(final Random random) {
        return new Chooser() {
            @Override
            public boolean applied(final int index, final Op op) {
                return random.nextBoolean();
            }

            @Override
            public IntPredicate sectors(final int index, final Write write) {
                if (random.nextInt(3) != 0) {
                    return null;
                }
                final long bits = random.nextLong();
                final int salt = random.nextInt(64);
                return s -> (bits >>> ((s + salt) & 63) & 1) != 0;
            }
        };
    }

    /**
     * Writes into {@code target} the files the disc holds after a power cut when the first {@code cut} changes
     * had been issued. {@code dropped} are changes the disc acknowledged and never stored (a lying disc,
     * dm-flakey's {@code drop_writes}): they are missing even when a sync covered them.
     */
    public void build(final Path target, final int cut, final Chooser chooser, final IntPredicate dropped)
        throws IOException {
        final List<Op> log = ops().subList(0, cut);
        final Map<Integer, Integer> lastSync = new HashMap<>();
        final Map<String, Integer> lastDirSync = new HashMap<>();
        for (int i = 0; i < log.size(); i++) {
            if (log.get(i) instanceof Sync(final int inode)) {
                lastSync.put(inode, i);
            } else if (log.get(i) instanceof SyncDir(final String dir)) {
                lastDirSync.put(dir, i);
            }
        }
        final Map<Integer, Content> contents = new HashMap<>();
        baseContents.forEach((inode, c) -> contents.put(inode, c.copy()));
        final Map<String, Map<String, Integer>> entries = new HashMap<>();
        baseEntries.forEach((dir, e) -> entries.put(dir, new HashMap<>(e)));
        for (int i = 0; i < log.size(); i++) {
            final Op op = log.get(i);
            final boolean durable = switch (op) {
                case Write w -> i < lastSync.getOrDefault(w.inode(), -1);
                case Zero z -> i < lastSync.getOrDefault(z.inode(), -1);
                case Truncate t -> i < lastSync.getOrDefault(t.inode(), -1);
                case Create c -> i < lastDirSync.getOrDefault(c.dir(), -1);
                case Rename r -> i < lastDirSync.getOrDefault(r.dir(), -1);
                case Unlink u -> i < lastDirSync.getOrDefault(u.dir(), -1);
                case Sync s -> true;
                case SyncDir s -> true;
            };
            if (dropped.test(i) || !durable && !chooser.applied(i, op)) {
                continue;
            }
            switch (op) {
                case Write w -> contents.computeIfAbsent(w.inode(), k -> new Content())
                    .write(w.offset(), w.bytes(), durable ? null : chooser.sectors(i, w));
                case Zero z -> contents.computeIfAbsent(z.inode(), k -> new Content()).zero(z.offset(), z.length());
                case Truncate t -> contents.computeIfAbsent(t.inode(), k -> new Content()).truncate(t.length());
                case Create c -> entries.computeIfAbsent(c.dir(), k -> new HashMap<>()).put(c.name(), c.inode());
                case Rename r -> {
                    final Map<String, Integer> e = entries.computeIfAbsent(r.dir(), k -> new HashMap<>());
                    final Integer inode = e.remove(r.from());
                    if (inode != null) {
                        e.put(r.to(), inode);
                    }
                }
                case Unlink u -> entries.computeIfAbsent(u.dir(), k -> new HashMap<>()).remove(u.name());
                case Sync s -> { }
                case SyncDir s -> { }
            }
        }
        materialise(target, "", entries, contents, new HashMap<>());
    }

    private static void materialise(final Path target, final String dir, final Map<String, Map<String, Integer>> entries,
                                    final Map<Integer, Content> contents, final Map<Integer, Path> written)
        throws IOException {
        final Path here = dir.isEmpty() ? target : target.resolve(dir);
        Files.createDirectories(here);
        for (final Map.Entry<String, Integer> e : entries.getOrDefault(dir, Map.of()).entrySet()) {
            final String rel = dir.isEmpty() ? e.getKey() : dir + "/" + e.getKey();
            if (e.getValue() == DIRECTORY) {
                materialise(target, rel, entries, contents, written);
            } else if (written.containsKey(e.getValue())) {
                Files.createLink(target.resolve(rel), written.get(e.getValue()));
            } else {
                contents.getOrDefault(e.getValue(), new Content()).writeTo(target.resolve(rel));
                written.put(e.getValue(), target.resolve(rel));
            }
        }
    }

    /** A file's bytes as 512-byte sectors; a missing sector is a hole. */
    private static final class Content {
        private long length;
        private final TreeMap<Long, byte[]> sectors = new TreeMap<>();

        /** A file's current bytes, read in chunks so that a large sparse file costs no memory for its holes. */
        static Content of(final Path file) throws IOException {
            final Content c = new Content();
            try (FileChannel channel = FileChannel.open(file, StandardOpenOption.READ)) {
                final ByteBuffer chunk = ByteBuffer.allocate(1 << 20);
                final byte[] sector = new byte[SECTOR];
                for (long at = 0; at < channel.size(); at += chunk.capacity()) {
                    chunk.clear();
                    while (chunk.hasRemaining() && channel.read(chunk, at + chunk.position()) > 0) {
                        // fill the chunk
                    }
                    for (int i = 0; i < chunk.position(); i += SECTOR) {
                        final int n = Math.min(SECTOR, chunk.position() - i);
                        chunk.get(i, sector, 0, n);
                        if (!allZero(sector)) {
                            c.sectors.put((at + i) / SECTOR, Arrays.copyOf(sector, SECTOR));
                        }
                    }
                }
                c.length = channel.size();
            }
            return c;
        }

        Content copy() {
            final Content c = new Content();
            c.length = length;
            sectors.forEach((k, v) -> c.sectors.put(k, v.clone()));
            return c;
        }

        void write(final long offset, final byte[] bytes, final IntPredicate torn) {
            long pos = offset;
            final long end = offset + bytes.length;
            while (pos < end) {
                final long sector = pos / SECTOR;
                final long sectorEnd = Math.min(end, (sector + 1) * SECTOR);
                if (torn == null || torn.test((int) sector)) {
                    final byte[] s = sectors.computeIfAbsent(sector, k -> new byte[SECTOR]);
                    System.arraycopy(bytes, (int) (pos - offset), s, (int) (pos - sector * SECTOR),
                        (int) (sectorEnd - pos));
                    length = Math.max(length, sectorEnd);
                }
                pos = sectorEnd;
            }
            // A torn write still extends the file: the size is metadata, written with the first block.
            length = Math.max(length, end);
            sectors.values().removeIf(PowerCutRecorder::allZero);
        }

        void zero(final long offset, final long length) {
            final byte[] zeros = new byte[(int) Math.min(length, 1 << 20)];
            for (long done = 0; done < length; done += zeros.length) {
                final long before = this.length;
                write(offset + done, Arrays.copyOf(zeros, (int) Math.min(zeros.length, length - done)), null);
                this.length = before; // KEEP_SIZE
            }
        }

        void truncate(final long newLength) {
            sectors.tailMap((newLength + SECTOR - 1) / SECTOR).clear();
            if (newLength % SECTOR != 0 && sectors.containsKey(newLength / SECTOR)) {
                Arrays.fill(sectors.get(newLength / SECTOR), (int) (newLength % SECTOR), SECTOR, (byte) 0);
            }
            length = newLength;
        }

        void writeTo(final Path file) throws IOException {
            try (FileChannel channel = FileChannel.open(file, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE)) {
                for (final Map.Entry<Long, byte[]> s : sectors.entrySet()) {
                    final long at = s.getKey() * SECTOR;
                    if (at < length) {
                        final ByteBuffer b = ByteBuffer.wrap(s.getValue(), 0, (int) Math.min(SECTOR, length - at));
                        while (b.hasRemaining()) {
                            channel.write(b, at + b.position());
                        }
                    }
                }
                channel.truncate(length);
                if (channel.size() < length) {
                    try (var raf = new java.io.RandomAccessFile(file.toFile(), "rw")) {
                        raf.setLength(length);
                    }
                }
            }
        }
    }

    private static boolean allZero(final byte[] b) {
        for (final byte x : b) {
            if (x != 0) {
                return false;
            }
        }
        return true;
    }

    // ------------------------------------------------------------------------------------------------ recorders

    /** {@link NativeIo} that logs what {@code pwrite}, {@code fallocate} and {@code fdatasync} change. */
    private final class RecordingNativeIo implements NativeIo {
        private final NativeIo real = NativeIo.get();

        private Integer inode(final int fd) {
            synchronized (PowerCutRecorder.this) {
                return fds.get(fd);
            }
        }

        @Override
        public int open(final String path, final int flags) throws NativeIoException {
            final int fd = real.open(path, flags);
            final String rel = rel(Path.of(path));
            if (rel != null) {
                synchronized (PowerCutRecorder.this) {
                    fds.put(fd, inodeOf(rel));
                }
            }
            return fd;
        }

        @Override
        public void close(final int fd) throws NativeIoException {
            synchronized (PowerCutRecorder.this) {
                fds.remove(fd);
            }
            real.close(fd);
        }

        @Override
        public int pwrite(final int fd, final long address, final int length, final long offset)
            throws NativeIoException {
            final int n = real.pwrite(fd, address, length, offset);
            final Integer inode = inode(fd);
            if (inode != null && n > 0) {
                log(new Write(inode, offset, MemorySegment.ofAddress(address).reinterpret(n)
                    .toArray(ValueLayout.JAVA_BYTE)));
            }
            return n;
        }

        @Override
        public void fallocate(final int fd, final int mode, final long offset, final long length)
            throws NativeIoException {
            real.fallocate(fd, mode, offset, length);
            final Integer inode = inode(fd);
            if (inode != null && (mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) != 0) {
                log(new Zero(inode, offset, length));
            } else if (inode != null) {
                throw new IllegalStateException("fallocate mode " + mode + " is not modelled");
            }
        }

        @Override
        public void fdatasync(final int fd) throws NativeIoException {
            real.fdatasync(fd);
            final Integer inode = inode(fd);
            if (inode != null) {
                log(new Sync(inode));
            }
        }

        @Override
        public boolean tryLockExclusive(final int fd) throws NativeIoException {
            return real.tryLockExclusive(fd);
        }

        @Override
        public long seekData(final int fd, final long offset) throws NativeIoException {
            return real.seekData(fd, offset);
        }

        @Override
        public long seekHole(final int fd, final long offset) throws NativeIoException {
            return real.seekHole(fd, offset);
        }

        @Override
        public void fadvise(final int fd, final long offset, final long length, final int advice)
            throws NativeIoException {
            real.fadvise(fd, offset, length, advice);
        }

        @Override
        public long blockDeviceSize(final int fd) throws NativeIoException {
            return real.blockDeviceSize(fd);
        }

        @Override
        public void blockDiscard(final int fd, final long offset, final long length) {
            throw new UnsupportedOperationException("the power-cut recorder models files, not block devices");
        }

        @Override
        public void blockZeroOut(final int fd, final long offset, final long length) {
            throw new UnsupportedOperationException("the power-cut recorder models files, not block devices");
        }

        @Override
        public int pread(final int fd, final long address, final int length, final long offset)
            throws NativeIoException {
            return real.pread(fd, address, length, offset);
        }

        @Override
        public int socketFamily(final int fd) throws NativeIoException {
            return real.socketFamily(fd);
        }

        @Override
        public boolean isBlockDevice(final int fd) throws NativeIoException {
            return real.isBlockDevice(fd);
        }
    }

    /** A {@link FileChannel} that logs its writes, truncations and syncs. */
    private final class RecordingChannel extends FileChannel {
        private final FileChannel real;
        private final int inode;

        RecordingChannel(final FileChannel real, final int inode) {
            this.real = real;
            this.inode = inode;
        }

        private void logWrite(final ByteBuffer src, final int from, final int n, final long at) {
            if (n > 0) {
                final byte[] bytes = new byte[n];
                src.get(from, bytes);
                log(new Write(inode, at, bytes));
            }
        }

        @Override
        public int write(final ByteBuffer src, final long position) throws IOException {
            final int from = src.position();
            final int n = real.write(src, position);
            logWrite(src, from, n, position);
            return n;
        }

        @Override
        public int write(final ByteBuffer src) throws IOException {
            final int from = src.position();
            final long at = real.position();
            final int n = real.write(src);
            logWrite(src, from, n, at);
            return n;
        }

        @Override
        public long write(final ByteBuffer[] srcs, final int offset, final int length) {
            throw new UnsupportedOperationException("gathering writes are not modelled");
        }

        @Override
        public FileChannel truncate(final long size) throws IOException {
            final long before = real.size();
            real.truncate(size);
            if (size < before) {
                log(new Truncate(inode, size));
            }
            return this;
        }

        @Override
        public void force(final boolean metaData) throws IOException {
            real.force(metaData);
            log(new Sync(inode));
        }

        @Override
        public int read(final ByteBuffer dst) throws IOException {
            return real.read(dst);
        }

        @Override
        public long read(final ByteBuffer[] dsts, final int offset, final int length) throws IOException {
            return real.read(dsts, offset, length);
        }

        @Override
        public int read(final ByteBuffer dst, final long position) throws IOException {
            return real.read(dst, position);
        }

        @Override
        public long position() throws IOException {
            return real.position();
        }

        @Override
        public FileChannel position(final long newPosition) throws IOException {
            real.position(newPosition);
            return this;
        }

        @Override
        public long size() throws IOException {
            return real.size();
        }

        @Override
        public long transferTo(final long position, final long count, final WritableByteChannel target)
            throws IOException {
            return real.transferTo(position, count, target);
        }

        @Override
        public long transferFrom(final ReadableByteChannel src, final long position, final long count) {
            throw new UnsupportedOperationException("transferFrom is not modelled");
        }

        @Override
        public MappedByteBuffer map(final MapMode mode, final long position, final long size) {
            throw new UnsupportedOperationException("mapped files are not modelled");
        }

        @Override
        public FileLock lock(final long position, final long size, final boolean shared) throws IOException {
            return real.lock(position, size, shared);
        }

        @Override
        public FileLock tryLock(final long position, final long size, final boolean shared) throws IOException {
            return real.tryLock(position, size, shared);
        }

        @Override
        protected void implCloseChannel() throws IOException {
            real.close();
        }
    }
}
