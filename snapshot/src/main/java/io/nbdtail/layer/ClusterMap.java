package io.nbdtail.layer;

import io.nbdtail.storage.FaultPoints;
import io.nbdtail.storage.StorageException;
import io.nbdtail.storage.StorageIo;

import java.io.IOException;
import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.UUID;
import java.util.concurrent.atomic.AtomicIntegerArray;
import java.util.zip.CRC32C;

/**
 * The persistent per-cluster state of one layer: two bits per cluster, {@link #NONE} (not in this layer: look
 * below), {@link #DATA} (this layer's data file holds the cluster) or {@link #ZERO} (reads as zeros, hiding
 * whatever the layers below hold).
 *
 * <p>The states live in memory as {@code long} words and reach the {@code .map} file only through
 * {@link #capture()} and {@link #persist(Captured)}, which the layer's sync calls <em>after</em> its data is
 * durable. A state on disc therefore never claims data that is not durable (invariant 1), and a crash loses at
 * most states that no FLUSH covered.
 *
 * <p>File layout (all integers little-endian; see {@code docs/formats.md}): a 4 KiB header, then two 4 KiB slots
 * per page. A page is written to the slot that does not hold its current copy, with a generation one higher, so
 * a torn write leaves the previous copy intact; on open, the valid slot (CRC32C, page index and layer tag match)
 * with the higher generation wins.
 *
 * <p>Thread safety: {@link #set} may run concurrently for different clusters (words are updated by CAS);
 * callers serialise changes to one cluster. {@link #capture()} may run concurrently with {@link #set}.
 */
public final class ClusterMap implements AutoCloseable {
    public static final int NONE = 0;
    public static final int DATA = 1;
    public static final int ZERO = 2;

    static final byte[] MAGIC = "NBDTLMAP".getBytes(StandardCharsets.US_ASCII);
    static final int VERSION = 1;
    static final int BLOCK = 4096;
    static final int PAGE_HEADER = 24;
    static final int WORDS_PER_PAGE = (BLOCK - PAGE_HEADER) / Long.BYTES;
    /** Clusters whose states one page holds: 509 words of 32 two-bit states. */
    public static final int CLUSTERS_PER_PAGE = WORDS_PER_PAGE * 32;

    private static final VarHandle WORDS = MethodHandles.arrayElementVarHandle(long[].class);

    private final Path path;
    private final FileChannel file;
    private final UUID layerId;
    private final long tag;
    private final long size;
    private final int clusterSize;
    private final long clusters;
    private final int pages;
    private final long[] words;
    /** 1 when the page changed in memory since it was last captured. */
    private final AtomicIntegerArray dirty;
    /** Per page: the generation of its newest durable copy and the slot (0 or 1) that copy is in. */
    private final long[] generation;
    private final byte[] slot;

    private ClusterMap(final Path path, final FileChannel file, final UUID layerId, final long size,
                       final int clusterSize) {
        this.path = path;
        this.file = file;
        this.layerId = layerId;
        this.tag = layerId.getLeastSignificantBits();
        this.size = size;
        this.clusterSize = clusterSize;
        this.clusters = (size + clusterSize - 1) / clusterSize;
        this.pages = (int) ((clusters + CLUSTERS_PER_PAGE - 1) / CLUSTERS_PER_PAGE);
        this.words = new long[Math.toIntExact((long) pages * WORDS_PER_PAGE)];
        this.dirty = new AtomicIntegerArray(pages);
        this.generation = new long[pages];
        this.slot = new byte[pages];
    }

    /** Creates an empty map file (header only: unwritten pages read as all {@link #NONE}) and syncs it. */
    public static ClusterMap create(final Path path, final UUID layerId, final long size, final int clusterSize)
        throws IOException {
        return create(path, layerId, size, clusterSize, StorageIo.get());
    }

    /** {@link #create(Path, UUID, long, int)} through {@code io}. */
    public static ClusterMap create(final Path path, final UUID layerId, final long size, final int clusterSize,
                                    final StorageIo io) throws IOException {
        final FileChannel file = io.open(path, java.util.Set.of(StandardOpenOption.CREATE_NEW,
            StandardOpenOption.READ, StandardOpenOption.WRITE), LayeredDevice.OWNER_ONLY);
        try {
            final ClusterMap map = new ClusterMap(path, file, layerId, size, clusterSize);
            writeFully(file, map.header(), 0);
            final int[] all = new int[map.pages];
            java.util.Arrays.setAll(all, p -> p);
            map.writeEmptySpares(all);
            file.force(true);
            return map;
        } catch (final IOException | RuntimeException e) {
            file.close();
            throw e;
        }
    }

    /**
     * Opens and validates a map file.
     *
     * @throws LayerCorruptException if the header or a page cannot be trusted.
     */
    public static ClusterMap open(final Path path, final UUID layerId, final long size, final int clusterSize,
                                  final boolean readOnly) throws IOException {
        return open(path, layerId, size, clusterSize, readOnly, StorageIo.get());
    }

    /** {@link #open(Path, UUID, long, int, boolean)} through {@code io}. */
    public static ClusterMap open(final Path path, final UUID layerId, final long size, final int clusterSize,
                                  final boolean readOnly, final StorageIo io) throws IOException {
        final FileChannel file = io.open(path, readOnly ? java.util.Set.of(StandardOpenOption.READ)
            : java.util.Set.of(StandardOpenOption.READ, StandardOpenOption.WRITE));
        try {
            final ClusterMap map = new ClusterMap(path, file, layerId, size, clusterSize);
            map.load(readOnly);
            return map;
        } catch (final IOException | RuntimeException e) {
            file.close();
            throw e;
        }
    }

    private ByteBuffer header() {
        final ByteBuffer b = ByteBuffer.allocate(BLOCK).order(ByteOrder.LITTLE_ENDIAN);
        b.put(MAGIC);
        b.putInt(8, VERSION);
        b.putInt(12, BLOCK);
        b.putLong(16, layerId.getMostSignificantBits());
        b.putLong(24, layerId.getLeastSignificantBits());
        b.putLong(32, size);
        b.putInt(40, clusterSize);
        b.putInt(44, pages);
        b.putInt(48, 0);
        b.putInt(BLOCK - 4, crc(b, 0, BLOCK - 4));
        return b.clear();
    }

    private void load(final boolean readOnly) throws IOException {
        final ByteBuffer h = ByteBuffer.allocate(BLOCK).order(ByteOrder.LITTLE_ENDIAN);
        readFully(file, h, 0);
        final byte[] magic = new byte[MAGIC.length];
        h.get(0, magic);
        if (!java.util.Arrays.equals(magic, MAGIC)) {
            throw corrupt("the header has no NBDTLMAP magic");
        }
        if (h.getInt(BLOCK - 4) != crc(h, 0, BLOCK - 4)) {
            throw corrupt("the header checksum does not match");
        }
        if (h.getInt(8) != VERSION) {
            throw corrupt("format version " + h.getInt(8) + " is not one this build reads (" + VERSION + ")");
        }
        final UUID id = new UUID(h.getLong(16), h.getLong(24));
        if (!id.equals(layerId) || h.getLong(32) != size || h.getInt(40) != clusterSize || h.getInt(44) != pages) {
            throw corrupt("the header describes layer " + id + " of " + h.getLong(32) + " bytes, cluster size "
                + h.getInt(40) + ", " + h.getInt(44) + " pages; the manifest expects layer " + layerId + " of " + size
                + " bytes, cluster size " + clusterSize + ", " + pages + " pages");
        }
        final ByteBuffer a = ByteBuffer.allocate(BLOCK).order(ByteOrder.LITTLE_ENDIAN);
        final ByteBuffer b = ByteBuffer.allocate(BLOCK).order(ByteOrder.LITTLE_ENDIAN);
        final int[] blank = new int[pages];
        int blanks = 0;
        for (int p = 0; p < pages; p++) {
            readFully(file, a.clear(), slotOffset(p, 0));
            readFully(file, b.clear(), slotOffset(p, 1));
            final boolean aValid = validPage(a, p);
            final boolean bValid = validPage(b, p);
            final int pick;
            if (aValid && bValid) {
                pick = Long.compareUnsigned(a.getLong(8), b.getLong(8)) >= 0 ? 0 : 1;
            } else if (aValid) {
                pick = 0;
            } else if (bValid) {
                pick = 1;
            } else if (allZero(a) && allZero(b)) {
                blank[blanks++] = p; // never written (a map made before spare slots were filled): all NONE
                continue;
            } else {
                throw corrupt("neither copy of page " + p + " (clusters " + (long) p * CLUSTERS_PER_PAGE + " to "
                    + Math.min(clusters, (long) (p + 1) * CLUSTERS_PER_PAGE) + ") has a valid checksum");
            }
            final ByteBuffer page = pick == 0 ? a : b;
            generation[p] = page.getLong(8);
            slot[p] = (byte) pick;
            final int base = p * WORDS_PER_PAGE;
            for (int w = 0; w < WORDS_PER_PAGE; w++) {
                final long word = page.getLong(PAGE_HEADER + w * Long.BYTES);
                if ((word & (word >>> 1) & 0x5555_5555_5555_5555L) != 0) {
                    throw corrupt("page " + p + " holds a cluster in the undefined state 3");
                }
                words[base + w] = word;
            }
        }
        if (blanks > 0 && !readOnly) {
            writeEmptySpares(java.util.Arrays.copyOf(blank, blanks));
            file.force(false);
        }
        final long tail = (long) pages * CLUSTERS_PER_PAGE;
        for (long c = clusters; c < tail; c++) {
            if (state(c) != NONE) {
                throw corrupt("cluster " + c + " beyond the end of the layer is marked " + state(c));
            }
        }
    }

    /**
     * Writes a valid, empty copy of generation 0 into slot 1 of each page; the caller syncs. The first real copy of
     * a page goes to slot 0, so a power cut that tears it finds this one, and the page reads as never written (all
     * {@link #NONE}, which is what its states were at the last sync) instead of as a page with no valid copy,
     * which would stop the volume until {@code nbdtail check} (found by the power-cut test, reliability.md C3).
     */
    private void writeEmptySpares(final int[] which) throws IOException {
        final ByteBuffer b = ByteBuffer.allocate(BLOCK).order(ByteOrder.LITTLE_ENDIAN);
        for (final int p : which) {
            b.clear();
            b.putInt(4, p);
            b.putLong(16, tag);
            b.putInt(0, crc(b, 4, BLOCK));
            writeFully(file, b.clear(), slotOffset(p, 1));
            if (generation[p] == 0) {
                slot[p] = 1;
            }
        }
    }

    private boolean validPage(final ByteBuffer page, final int index) {
        return page.getInt(0) == crc(page, 4, BLOCK) && page.getInt(4) == index && page.getLong(16) == tag;
    }

    private static boolean allZero(final ByteBuffer page) {
        for (int i = 0; i < BLOCK; i += Long.BYTES) {
            if (page.getLong(i) != 0) {
                return false;
            }
        }
        return true;
    }

    private static int crc(final ByteBuffer b, final int from, final int to) {
        final CRC32C crc = new CRC32C();
        crc.update(b.duplicate().position(from).limit(to));
        return (int) crc.getValue();
    }

    private static long slotOffset(final int page, final int slot) {
        return BLOCK + ((long) page * 2 + slot) * BLOCK;
    }

    private LayerCorruptException corrupt(final String what) {
        return new LayerCorruptException(path + ": " + what);
    }

    // ------------------------------------------------------------------------------------------------ states

    public long clusters() {
        return clusters;
    }

    public int clusterSize() {
        return clusterSize;
    }

    public UUID layerId() {
        return layerId;
    }

    public Path path() {
        return path;
    }

    /** The state of cluster {@code c}: {@link #NONE}, {@link #DATA} or {@link #ZERO}. */
    public int state(final long c) {
        final int w = (int) (c >>> 5);
        final int shift = (int) (c & 31) << 1;
        return (int) ((long) WORDS.getOpaque(words, w) >>> shift) & 3;
    }

    /** Sets the state of cluster {@code c} and marks its page for the next {@link #capture()}. */
    public void set(final long c, final int state) {
        final int w = (int) (c >>> 5);
        final int shift = (int) (c & 31) << 1;
        long old;
        long updated;
        do {
            old = (long) WORDS.getVolatile(words, w);
            updated = old & ~(3L << shift) | (long) state << shift;
            if (updated == old) {
                return;
            }
        } while (!WORDS.compareAndSet(words, w, old, updated));
        dirty.set(w / WORDS_PER_PAGE, 1);
    }

    /**
     * The first cluster at or after {@code from} (and before {@code to}) whose state is not {@link #NONE}, or
     * {@code to}. Skips empty words, so a scan over a sparse layer is fast.
     */
    public long nextUsed(final long from, final long to) {
        long c = from;
        while (c < to) {
            final int w = (int) (c >>> 5);
            final long word = (long) WORDS.getOpaque(words, w) >>> ((int) (c & 31) << 1);
            if (word == 0) {
                c = ((long) w + 1) << 5;
                continue;
            }
            return Math.min(to, c + (Long.numberOfTrailingZeros(word) >>> 1));
        }
        return to;
    }

    /** The number of clusters in state {@code state}. */
    public long count(final int state) {
        long n = 0;
        for (long c = nextUsed(0, clusters); c < clusters; c = nextUsed(c + 1, clusters)) {
            if (state(c) == state) {
                n++;
            }
        }
        return n;
    }

    // ------------------------------------------------------------------------------------------------ persistence

    /** The pages that changed since the last capture, copied; see {@link #persist}. */
    public record Captured(int[] pages, long[][] contents) {
        public boolean isEmpty() {
            return pages.length == 0;
        }
    }

    /**
     * Copies every changed page and clears its change mark. Call it <em>before</em> syncing the layer's data: a
     * state is set only after its data was written, so every state captured here has its data covered by the
     * sync that follows. A state set after the copy keeps its page marked for the next capture.
     */
    public Captured capture() {
        int n = 0;
        for (int p = 0; p < pages; p++) {
            if (dirty.get(p) != 0) {
                n++;
            }
        }
        final int[] which = new int[n];
        final long[][] contents = new long[n][];
        int i = 0;
        for (int p = 0; p < pages && i < n; p++) {
            if (dirty.get(p) != 0 && dirty.compareAndSet(p, 1, 0)) {
                final long[] copy = new long[WORDS_PER_PAGE];
                final int base = p * WORDS_PER_PAGE;
                for (int w = 0; w < WORDS_PER_PAGE; w++) {
                    copy[w] = (long) WORDS.getVolatile(words, base + w);
                }
                which[i] = p;
                contents[i++] = copy;
            }
        }
        return i == n ? new Captured(which, contents)
            : new Captured(java.util.Arrays.copyOf(which, i), java.util.Arrays.copyOf(contents, i));
    }

    /**
     * Writes captured pages, each to its spare slot with the next generation, then {@code fdatasync}s the map.
     * If this fails the pages are marked changed again; the caller treats the failure as a failed sync.
     */
    public synchronized void persist(final Captured captured) throws StorageException {
        if (captured.isEmpty()) {
            return;
        }
        final ByteBuffer b = ByteBuffer.allocate(BLOCK).order(ByteOrder.LITTLE_ENDIAN);
        try {
            for (int i = 0; i < captured.pages().length; i++) {
                final int p = captured.pages()[i];
                final long gen = generation[p] + 1;
                final int target = generation[p] == 0 && slot[p] == 0 ? 0 : 1 - slot[p];
                b.clear();
                b.putInt(4, p);
                b.putLong(8, gen);
                b.putLong(16, tag);
                final long[] words = captured.contents()[i];
                for (int w = 0; w < WORDS_PER_PAGE; w++) {
                    b.putLong(PAGE_HEADER + w * Long.BYTES, words[w]);
                }
                b.putInt(0, crc(b, 4, BLOCK));
                FaultPoints.reach("map.page-write");
                writeFully(file, b.clear(), slotOffset(p, target));
                generation[p] = gen;
                slot[p] = (byte) target;
            }
            FaultPoints.reach("map.before-sync");
            file.force(false);
            FaultPoints.reach("map.synced");
        } catch (final IOException e) {
            for (final int p : captured.pages()) {
                dirty.set(p, 1);
            }
            throw StorageException.of("writing the cluster map " + path, e);
        }
    }

    /** Captures and persists in one step; for maps that no writer changes concurrently (merges, checks). */
    public void flush() throws StorageException {
        persist(capture());
    }

    @Override
    public void close() {
        try {
            file.close();
        } catch (final IOException ignored) {
            // nothing was pending: every change reaches the file only through persist(), which syncs
        }
    }

    static void writeFully(final FileChannel file, final ByteBuffer b, final long offset) throws IOException {
        long at = offset;
        while (b.hasRemaining()) {
            at += file.write(b, at);
        }
    }

    static void readFully(final FileChannel file, final ByteBuffer b, final long offset) throws IOException {
        long at = offset;
        while (b.hasRemaining()) {
            final int n = file.read(b, at);
            if (n < 0) {
                // Past the end of a sparse map: the rest reads as zeros (pages never written).
                while (b.hasRemaining()) {
                    b.put((byte) 0);
                }
                return;
            }
            at += n;
        }
    }
}
