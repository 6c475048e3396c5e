package io.nbdtail.volume;

import com.fasterxml.jackson.annotation.JsonPropertyOrder;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.core.JsonToken;
import com.fasterxml.jackson.databind.DeserializationContext;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.deser.std.StdScalarDeserializer;
import com.fasterxml.jackson.databind.module.SimpleModule;
import com.fasterxml.jackson.databind.ser.std.ToStringSerializer;
import io.nbdtail.layer.LayerCorruptException;
import io.nbdtail.layer.LayeredDevice;
import io.nbdtail.layer.Manifest;
import io.nbdtail.layer.NeedsCheckException;
import io.nbdtail.storage.FileBlockDevice;
import io.nbdtail.storage.StorageIo;
import io.nbdtail.storage.nativeio.NativeIo;
import io.nbdtail.storage.nativeio.NativeIoException;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.AccessDeniedException;
import java.nio.file.DirectoryNotEmptyException;
import java.nio.file.DirectoryStream;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.FileSystemException;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.NoSuchFileException;
import java.nio.file.NotDirectoryException;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.DateTimeException;
import java.time.Instant;
import java.time.temporal.ChronoUnit;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.Executor;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.stream.Stream;

/**
 * Volume management on one data directory: create, list, inspect, open and delete volumes. The offline CLI
 * and the server (and later its control API) all go through this class, so the rules live in one place.
 *
 * <pre>
 * DATA/nbdtail.lock              flock'd by the server serving DATA ("pid=N" inside, for people)
 * DATA/volumes/NAME/volume.json  {@link VolumeMetadata} as JSON
 * DATA/volumes/NAME/data.raw     a file volume's bytes: sparse, length == size, mode 0600
 * DATA/volumes/NAME/lock         flock'd by the process that has the volume open
 * </pre>
 *
 * <p>Crash safety. A volume is built in {@code volumes/.NAME.creating-RANDOM} and renamed into place once it is
 * complete and synced; a deleted volume is first renamed to {@code volumes/.NAME.deleting-RANDOM} and then
 * emptied. Names starting with a dot are never volumes, so a crash at any point leaves either the whole volume
 * or none of it in {@link #list}, and {@link #open} removes the leftovers. {@code volume.json} is only ever
 * replaced atomically: write {@code volume.json.tmp}, sync it, rename it, sync the directory.
 *
 * <p>Locks are {@code flock}s, which the kernel drops when their process dies: a crash never leaves a stale
 * lock behind, and the lock files themselves are never removed while a volume exists.
 *
 * <p>Thread-safe: the instance holds no mutable state; the file system and its locks arbitrate.
 */
public final class VolumeService {
    private static final Logger LOG = LoggerFactory.getLogger(VolumeService.class);

    private static final int MAX_NAME_LENGTH = 128;
    private static final long SECTOR = 512;
    private static final long MAX_SIZE = 1L << 62;
    private static final String VOLUMES = "volumes";
    private static final String SERVER_LOCK = "nbdtail.lock";
    private static final String RECORD = "volume.json";
    private static final String RECORD_TEMP = "volume.json.tmp";
    private static final String DATA = "data.raw";
    private static final String LOCK = "lock";
    private static final String ACL = "acl.json";
    /** The volume's ownership record (serving, receiving, moved; epoch), kept by the live mirror. */
    public static final String MIRROR_RECORD = "mirror.json";
    private static final String CREATING = ".creating-";
    private static final String DELETING = ".deleting-";
    /** Files a volume directory of ours can hold; anything else means someone else put it there. */
    private static final Set<String> OUR_FILES = Set.of(RECORD, RECORD_TEMP, DATA, LOCK, ACL, ACL + ".tmp",
        Manifest.FILE, Manifest.FILE + ".tmp", "layers", MIRROR_RECORD, MIRROR_RECORD + ".tmp");
    /** How long {@link #lockDataDirectory} waits out a short-lived holder (another command's clean-up). */
    private static final long SERVER_LOCK_WAIT_MILLIS = 1_000;
    /** How long opening or deleting a volume waits out a short-lived holder ({@link #info} testing the lock). */
    private static final long VOLUME_LOCK_WAIT_MILLIS = 250;
    private static final String REGULAR_FILE = "a regular file";
    private static final int S_IFMT = 0170000;
    private static final int S_IFBLK = 0060000;

    private static final ObjectMapper JSON = mapper();

    private final Path dataDir;
    private final Path volumesDir;
    private final NativeIo nativeIo;
    /** What opened volumes change their files through; {@link #nativeIo} is its system-call half. */
    private final StorageIo io;

    private VolumeService(final Path dataDir, final StorageIo io) {
        this.dataDir = dataDir;
        this.volumesDir = dataDir.resolve(VOLUMES);
        this.io = io;
        this.nativeIo = io.nativeIo();
    }

    /** {@link #open(Path, NativeIo)} with the platform's {@link NativeIo}. */
    public static VolumeService open(final Path dataDir) throws VolumeException {
        return open(dataDir, NativeIo.get());
    }

    /**
     * Opens a data directory, creating it and {@code DATA/volumes} if missing, and removes what an interrupted
     * create or delete left behind (unless another process holds the data directory, which then owns them).
     *
     * @throws VolumeException {@code IO_ERROR} if the directory cannot be created.
     */
    public static VolumeService open(final Path dataDir, final NativeIo nativeIo) throws VolumeException {
        Objects.requireNonNull(nativeIo, "nativeIo");
        return open(dataDir, StorageIo.of(nativeIo));
    }

    /**
     * {@link #open(Path, NativeIo)} with the files of opened volumes changed through {@code io} (the power-cut
     * tests record them).
     */
    public static VolumeService open(final Path dataDir, final StorageIo io) throws VolumeException {
        Objects.requireNonNull(dataDir, "dataDir");
        Objects.requireNonNull(io, "io");
        final Path dir = dataDir.toAbsolutePath().normalize();
        if (Files.exists(dir) && !Files.isDirectory(dir)) {
            throw new VolumeException(VolumeException.Code.IO_ERROR, "data directory " + dir + " is not a directory;"
                + " give the path of a directory (it is created if missing)");
        }
        final VolumeService service = new VolumeService(dir, io);
        try {
            Files.createDirectories(service.volumesDir);
        } catch (final IOException e) {
            throw new VolumeException(VolumeException.Code.IO_ERROR, "cannot create data directory " + dir + " ("
                + reason(e) + "); run as a user that can write there, or choose another data directory", e);
        }
        service.cleanUp();
        return service;
    }

    /** The data directory, absolute and normalised. */
    public Path dataDir() {
        return dataDir;
    }

    // ------------------------------------------------------------------------------------------------ create

    /**
     * Creates a volume: a sparse file of {@code size} bytes, or a record of an existing block device.
     *
     * @param name        the volume and export name, see {@link #checkName}.
     * @param size        bytes, a positive multiple of 512; for a block device 0 (take the device's size) or
     *                    exactly the device's size.
     * @param devicePath  {@code null} for a file volume, else the block device to register. The device is only
     *                    inspected, never written.
     * @param description free text for NBD clients; {@code null} means none.
     * @param readOnly    serve the volume read-only.
     * @return the record as stored.
     */
    public VolumeMetadata create(final String name, final long size, final String devicePath,
                                 final String description, final boolean readOnly) throws VolumeException {
        return create(name, size, devicePath, description, readOnly, Map.of());
    }

    /**
     * {@link #create(String, long, String, String, boolean)} with side records (see {@link #writeSideRecord}) that
     * are in place from the first moment the volume exists: a volume created to receive a mirror is never, even
     * after a crash, an ordinary empty volume.
     */
    public VolumeMetadata create(final String name, final long size, final String devicePath,
                                 final String description, final boolean readOnly, final Map<String, Object> records)
        throws VolumeException {
        checkName(name);
        for (final String file : records.keySet()) {
            checkSideRecord(file);
        }
        final Path device = devicePath == null ? null : devicePath(devicePath);
        final long volumeSize = device == null ? checkSize(size) : deviceSize(device, size);
        final Path dir = volumesDir.resolve(name);
        if (Files.exists(dir, LinkOption.NOFOLLOW_LINKS)) {
            throw alreadyExists(name, dir);
        }
        if (device != null) {
            checkNotRegistered(device);
        }
        final VolumeMetadata metadata = new VolumeMetadata(VolumeMetadata.FORMAT_VERSION, UUID.randomUUID(), name,
            device == null ? VolumeMetadata.Kind.FILE : VolumeMetadata.Kind.BLOCK_DEVICE, volumeSize,
            device == null ? null : device.toString(), description == null ? "" : description, readOnly,
            Instant.now().truncatedTo(ChronoUnit.MILLIS));
        place(metadata, temp -> {
            if (device == null) {
                createSparseFile(temp.resolve(DATA), volumeSize);
            }
            for (final Map.Entry<String, Object> record : records.entrySet()) {
                writeJson(temp, record.getKey(), record.getValue());
            }
        });
        LOG.info("created volume {} ({} bytes, {})", name, volumeSize, metadata.kind());
        return metadata;
    }

    /** Fills a half-built volume directory. */
    @FunctionalInterface
    private interface Populate {
        void into(Path dir) throws IOException;
    }

    /**
     * Builds a volume in a hidden directory, writes its record, and renames it into place in one atomic step, so
     * a crash leaves either no volume or a whole one (and a dot-directory that {@link #open} removes).
     */
    private void place(final VolumeMetadata metadata, final Populate populate) throws VolumeException {
        final String name = metadata.name();
        final Path dir = volumesDir.resolve(name);
        final Path temp = volumesDir.resolve("." + name + CREATING + randomSuffix());
        Lock lock = null;
        boolean renamed = false;
        try {
            Files.createDirectory(temp);
            // Held until the volume is in place, so that no other process's clean-up takes the half-built
            // directory for a crash leftover.
            lock = tryLock(temp.resolve(LOCK), true);
            populate.into(temp);
            writeRecord(temp, metadata);
            try {
                Files.move(temp, dir, StandardCopyOption.ATOMIC_MOVE);
            } catch (final FileAlreadyExistsException | DirectoryNotEmptyException e) {
                throw alreadyExists(name, dir);
            } catch (final FileSystemException e) {
                if (Files.exists(dir, LinkOption.NOFOLLOW_LINKS)) {
                    throw alreadyExists(name, dir);
                }
                throw e;
            }
            renamed = true;
            syncDirectory(volumesDir);
        } catch (final IOException e) {
            if (renamed) {
                throw new VolumeException(VolumeException.Code.IO_ERROR, "volume '" + name + "' was created but "
                    + volumesDir + " could not be synced (" + reason(e) + "), so it may be lost on power failure;"
                    + " check the disc, then see 'nbdtail volume info " + name + "'", e);
            }
            throw new VolumeException(VolumeException.Code.IO_ERROR, "cannot create volume '" + name + "' in "
                + volumesDir + ": " + reason(e) + hint(e), e);
        } finally {
            if (lock != null) {
                lock.close();
            }
            if (!renamed) {
                deleteTree(temp);
            }
        }
    }

    // ------------------------------------------------------------------------------------------------ snapshots

    /**
     * Creates volume {@code newName} from snapshot {@code snapshot} of the open volume {@code source}: a writable
     * volume that shares the snapshot's frozen layer files (hard links: no data is copied) and starts with an
     * empty active layer of its own.
     */
    public VolumeMetadata cloneVolume(final Volume source, final String snapshot, final String newName)
        throws VolumeException {
        checkName(newName);
        final LayeredDevice layers = source.layers();
        if (layers == null) {
            throw new VolumeException(VolumeException.Code.CONFLICT, "'" + source.name() + "' is a snapshot view;"
                + " clone from the volume");
        }
        if (Files.exists(volumesDir.resolve(newName), LinkOption.NOFOLLOW_LINKS)) {
            throw alreadyExists(newName, volumesDir.resolve(newName));
        }
        final VolumeMetadata from = source.metadata();
        final VolumeMetadata metadata = new VolumeMetadata(VolumeMetadata.FORMAT_VERSION, UUID.randomUUID(), newName,
            VolumeMetadata.Kind.FILE, from.size(), null, "clone of " + from.name() + "@" + snapshot, false,
            Instant.now().truncatedTo(ChronoUnit.MILLIS));
        try {
            place(metadata, temp -> layers.cloneTo(snapshot, temp, metadata.id(), temp.resolve(DATA), Instant.now()));
        } catch (final VolumeException e) {
            if (e.getCause() instanceof io.nbdtail.layer.SnapshotException se) {
                throw snapshotError(se);
            }
            throw e;
        }
        LOG.info("cloned volume {} from {}@{}", newName, from.name(), snapshot);
        return metadata;
    }

    /** Maps a refused snapshot operation to the volume error the API and CLI report. */
    public static VolumeException snapshotError(final io.nbdtail.layer.SnapshotException e) {
        return new VolumeException(switch (e.code()) {
            case NOT_FOUND -> VolumeException.Code.SNAPSHOT_NOT_FOUND;
            case ALREADY_EXISTS -> VolumeException.Code.SNAPSHOT_EXISTS;
            case TOO_DEEP, REFUSED -> VolumeException.Code.CONFLICT;
        }, e.getMessage(), e);
    }

    /**
     * Checks a closed volume's layers (see {@link io.nbdtail.layer.Checker}); with {@code repair}, frees leaked
     * space and clears the needs-check flag if nothing is corrupt.
     *
     * @throws VolumeException {@code LOCKED} while a server serves the volume.
     */
    public io.nbdtail.layer.Checker.Report check(final String name, final boolean repair) throws VolumeException {
        checkName(name);
        final Path dir = existing(name);
        final Path lockFile = dir.resolve(LOCK);
        try (Lock ignored = lock(name, lockFile, "volume '" + name + "' is in use by another nbdtail process (lock "
            + lockFile + " is held); stop serving it, then check it")) {
            final VolumeMetadata metadata = readRecord(dir);
            final Path data = dataPath(dir, metadata);
            return new io.nbdtail.layer.Checker(dir, metadata.id(), metadata.size(), Files.exists(data) ? data : null,
                nativeIo).check(repair);
        } catch (final IOException e) {
            throw new VolumeException(VolumeException.Code.IO_ERROR, "cannot check volume '" + name + "': "
                + reason(e), e);
        }
    }

    private static void createSparseFile(final Path file, final long size) throws IOException {
        // 0600: the bytes of somebody's disc are nobody else's business.
        Files.createFile(file, PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rw-------")));
        try (RandomAccessFile raf = new RandomAccessFile(file.toFile(), "rw")) {
            raf.setLength(size);
            raf.getChannel().force(false);
        }
    }

    private static Path devicePath(final String devicePath) throws VolumeException {
        if (devicePath.isBlank()) {
            throw new VolumeException(VolumeException.Code.INVALID_DEVICE, "the device path is empty; give the path"
                + " of a block device such as /dev/vg0/web1");
        }
        return Path.of(devicePath).toAbsolutePath().normalize();
    }

    /** The size of the block device at {@code device}, checked against the size the caller asked for. */
    private long deviceSize(final Path device, final long size) throws VolumeException {
        if (!Files.exists(device)) {
            throw new VolumeException(VolumeException.Code.INVALID_DEVICE, "device " + device + " does not exist;"
                + " give the path of an existing block device such as /dev/vg0/web1");
        }
        // Refuse what is plainly no block device before opening it: opening a FIFO would block forever.
        final String type = fileType(device);
        if (type != null && !type.equals(REGULAR_FILE)) {
            throw notBlockDevice(device, type);
        }
        final int fd;
        try {
            fd = nativeIo.open(device.toString(), NativeIo.O_RDONLY);
        } catch (final NativeIoException e) {
            throw new VolumeException(VolumeException.Code.INVALID_DEVICE, "cannot open device " + device + ": "
                + e.getMessage() + "; check the path, and run as a user that may read the device", e);
        }
        try {
            if (!nativeIo.isBlockDevice(fd)) {
                throw notBlockDevice(device, type);
            }
            final long deviceSize = nativeIo.blockDeviceSize(fd);
            if (deviceSize <= 0 || deviceSize % SECTOR != 0 || deviceSize > MAX_SIZE) {
                throw new VolumeException(VolumeException.Code.INVALID_DEVICE, "device " + device + " has "
                    + deviceSize + " bytes; a volume needs a positive multiple of 512 bytes up to 2^62");
            }
            if (size != 0 && size != deviceSize) {
                throw new VolumeException(VolumeException.Code.INVALID_SIZE, "size " + size + " does not match "
                    + device + ", which has " + deviceSize + " bytes (" + Sizes.format(deviceSize) + "); leave the"
                    + " size out to take the device's size");
            }
            return deviceSize;
        } catch (final NativeIoException e) {
            throw new VolumeException(VolumeException.Code.INVALID_DEVICE, "cannot inspect device " + device + ": "
                + e.getMessage(), e);
        } finally {
            closeQuietly(fd);
        }
    }

    /** What {@code path} is if it is not a block device ({@link #REGULAR_FILE}, ...), or {@code null}. */
    private static String fileType(final Path path) {
        final int mode;
        try {
            mode = (Integer) Files.getAttribute(path, "unix:mode");
        } catch (final IOException | UnsupportedOperationException | IllegalArgumentException e) {
            return null; // Left to NativeIo.isBlockDevice.
        }
        return switch (mode & S_IFMT) {
            case S_IFBLK -> null;
            case 0100000 -> REGULAR_FILE;
            case 0040000 -> "a directory";
            case 0020000 -> "a character device";
            case 0010000 -> "a FIFO";
            case 0140000 -> "a socket";
            default -> "of an unknown type";
        };
    }

    /** @param type what it is instead, or {@code null} if unknown. */
    private static VolumeException notBlockDevice(final Path device, final String type) {
        return new VolumeException(VolumeException.Code.INVALID_DEVICE, device + " is " + (type == null ? ""
            : type + ", ") + "not a block device; give the path of a disc, partition or logical volume, or create a"
            + " file volume with a size instead");
    }

    /** Two volumes on one device would overwrite each other: refuse a device that is already registered. */
    private void checkNotRegistered(final Path device) throws VolumeException {
        final Path real = realPath(device);
        for (final VolumeMetadata other : list()) {
            if (other.kind() == VolumeMetadata.Kind.BLOCK_DEVICE
                && realPath(Path.of(other.devicePath())).equals(real)) {
                throw new VolumeException(VolumeException.Code.ALREADY_EXISTS, "device " + device + " is already"
                    + " registered as volume '" + other.name() + "'; serve that volume, or delete it first");
            }
        }
    }

    private static Path realPath(final Path path) {
        try {
            return path.toRealPath();
        } catch (final IOException e) {
            return path;
        }
    }

    private VolumeException alreadyExists(final String name, final Path dir) {
        if (!Files.exists(dir.resolve(RECORD))) {
            return new VolumeException(VolumeException.Code.ALREADY_EXISTS, "cannot create volume '" + name + "': "
                + dir + " exists but holds no " + RECORD + "; move it away (it may hold the data of a volume whose"
                + " record was lost), or choose another name");
        }
        return new VolumeException(VolumeException.Code.ALREADY_EXISTS, "volume '" + name + "' already exists in "
            + dataDir + "; choose another name, or delete it first");
    }

    // ------------------------------------------------------------------------------------------------ read

    /**
     * Every volume, sorted by name. A record that cannot be read (corrupt, or of an unknown format version) is
     * skipped with a warning naming the file; the listing itself never fails.
     */
    public List<VolumeMetadata> list() {
        final List<VolumeMetadata> result = new ArrayList<>();
        try (DirectoryStream<Path> dirs = Files.newDirectoryStream(volumesDir)) {
            for (final Path dir : dirs) {
                if (dir.getFileName().toString().startsWith(".") || !Files.isDirectory(dir)) {
                    continue;
                }
                try {
                    result.add(readRecord(dir));
                } catch (final VolumeException e) {
                    LOG.warn("skipping volume {}: {}", dir.resolve(RECORD), e.getMessage());
                }
            }
        } catch (final IOException e) {
            LOG.warn("cannot list the volumes in {}: {}", volumesDir, reason(e));
        }
        result.sort(Comparator.comparing(VolumeMetadata::name));
        return result;
    }

    /**
     * The record of one volume, where its bytes are, how many of them are allocated and whether a process has
     * it open.
     */
    public VolumeInfo info(final String name) throws VolumeException {
        checkName(name);
        final Path dir = existing(name);
        final VolumeMetadata metadata = readRecord(dir);
        final Path data = dataPath(dir, metadata);
        long allocated = 0;
        if (metadata.kind() == VolumeMetadata.Kind.BLOCK_DEVICE) {
            allocated = metadata.size();
        } else if (Files.exists(data) || !Files.exists(dir.resolve(Manifest.FILE))) {
            allocated = allocatedBytes(name, data);
        }
        // Snapshot layers: every layer's data file counts, shared clone layers included.
        final Path layers = dir.resolve("layers");
        if (Files.isDirectory(layers)) {
            try (java.util.stream.Stream<Path> files = Files.list(layers)) {
                for (final Path f : files.filter(f -> f.getFileName().toString().endsWith(".data")).toList()) {
                    allocated += allocatedBytes(name, f);
                }
            } catch (final IOException e) {
                throw new VolumeException(VolumeException.Code.IO_ERROR, "cannot inspect " + layers + ": "
                    + reason(e), e);
            }
        }
        return new VolumeInfo(metadata, Files.exists(data) || metadata.kind() == VolumeMetadata.Kind.BLOCK_DEVICE
            ? data : dir, allocated, lockHeld(dir.resolve(LOCK)));
    }

    /** Bytes of {@code data} that hold data, found by walking {@code SEEK_DATA}/{@code SEEK_HOLE}. */
    private long allocatedBytes(final String name, final Path data) throws VolumeException {
        final int fd;
        try {
            fd = nativeIo.open(data.toString(), NativeIo.O_RDONLY);
        } catch (final NativeIoException e) {
            if (e.errno() == NativeIo.ENOENT) {
                throw missingData(name, data);
            }
            throw new VolumeException(VolumeException.Code.IO_ERROR, "cannot open " + data + ": " + e.getMessage(), e);
        }
        try {
            final long length = Files.size(data);
            long allocated = 0;
            long position = 0;
            while (position < length) {
                final long start = nativeIo.seekData(fd, position);
                if (start < 0) {
                    break;
                }
                long end = nativeIo.seekHole(fd, start);
                if (end <= start) {
                    end = length;
                }
                allocated += end - start;
                position = end;
            }
            return allocated;
        } catch (final NativeIoException e) {
            if (e.errno() == NativeIo.EINVAL || e.errno() == NativeIo.EOPNOTSUPP) {
                // A file system without SEEK_DATA: count everything, the one answer that is never too low.
                return fileLength(data);
            }
            throw new VolumeException(VolumeException.Code.IO_ERROR, "cannot inspect " + data + ": " + e.getMessage(),
                e);
        } catch (final IOException e) {
            throw new VolumeException(VolumeException.Code.IO_ERROR, "cannot inspect " + data + ": " + reason(e), e);
        } finally {
            closeQuietly(fd);
        }
    }

    private static long fileLength(final Path data) throws VolumeException {
        try {
            return Files.size(data);
        } catch (final IOException e) {
            throw new VolumeException(VolumeException.Code.IO_ERROR, "cannot inspect " + data + ": " + reason(e), e);
        }
    }

    // ------------------------------------------------------------------------------------------------ open

    /**
     * Opens a volume for serving and takes its lock; the returned {@link Volume} releases both on close.
     *
     * @param storageExecutor where the volume's syncs run.
     * @throws VolumeException {@code LOCKED} if another process (or another opener in this one) has it open,
     *                         {@code CORRUPT} if its data does not match its record.
     */
    public Volume openVolume(final String name, final Executor storageExecutor) throws VolumeException {
        checkName(name);
        Objects.requireNonNull(storageExecutor, "storageExecutor");
        final Path dir = existing(name);
        final Path lockFile = dir.resolve(LOCK);
        final Lock lock = lock(name, lockFile, "volume '" + name + "' is in use by another nbdtail process (lock "
            + lockFile + " is held); stop that process first, or serve a different data directory");
        FileBlockDevice device = null;
        boolean opened = false;
        try {
            // Read under the lock: a delete that won the race has renamed the directory away by now.
            final VolumeMetadata metadata = readRecord(dir);
            final Path data = dataPath(dir, metadata);
            final boolean layered = Files.exists(dir.resolve(Manifest.FILE));
            if (metadata.kind() == VolumeMetadata.Kind.FILE && !Files.exists(data)) {
                if (!layered) {
                    throw missingData(name, data);
                }
                // the oldest snapshot, which held data.raw, was deleted: the layers hold everything
                final LayeredDevice layers = LayeredDevice.open(dir, metadata.id(), metadata.size(), null, null,
                    io, metadata.readOnly());
                try {
                    layers.resumePending();
                } catch (final IOException | RuntimeException e) {
                    layers.close();
                    throw e;
                }
                opened = true;
                return new Volume(metadata, layers, storageExecutor, lock);
            }
            device = FileBlockDevice.open(data, metadata.readOnly(), io);
            final VolumeMetadata current = layered ? metadata : finishInterruptedGrow(dir, metadata, device);
            checkDevice(current, device, data);
            final LayeredDevice layers = LayeredDevice.open(dir, current.id(), current.size(), device, data, io,
                current.readOnly());
            device = null; // owned by layers now
            try {
                layers.resumePending();
            } catch (final IOException | RuntimeException e) {
                layers.close();
                throw e;
            }
            final Volume volume = new Volume(current, layers, storageExecutor, lock);
            opened = true;
            return volume;
        } catch (final LayerCorruptException | NeedsCheckException e) {
            throw new VolumeException(VolumeException.Code.NEEDS_CHECK, "volume '" + name + "' cannot be served: "
                + e.getMessage() + (e instanceof LayerCorruptException ? "; run 'nbdtail check " + name
                + "' with the server stopped" : ""), e);
        } catch (final IOException e) {
            throw new VolumeException(VolumeException.Code.IO_ERROR, "cannot open volume '" + name + "': "
                + reason(e), e);
        } finally {
            if (!opened) {
                if (device != null) {
                    device.close();
                }
                lock.close();
            }
        }
    }

    /**
     * {@link #grow} extends the file first and records the size second; a crash in between leaves a file larger
     * than its record, whose new range is a hole the guest never saw. Finishing the grow loses nothing.
     */
    private VolumeMetadata finishInterruptedGrow(final Path dir, final VolumeMetadata metadata,
                                                        final FileBlockDevice device) throws IOException {
        if (metadata.kind() != VolumeMetadata.Kind.FILE || device.isBlockDevice() || device.size() <= metadata.size()
            || device.size() % 512 != 0) {
            return metadata;
        }
        LOG.warn("volume {}: finishing an interrupted grow from {} to {} bytes", metadata.name(), metadata.size(),
            device.size());
        final VolumeMetadata grown = metadata.withSize(device.size());
        writeRecord(dir, grown);
        return grown;
    }

    // ------------------------------------------------------------------------------------------------ change

    /**
     * Grows an open file volume: the file first (a sparse extension, synced), then the record; a crash in between
     * is finished by {@link #openVolume}. Growing to the current size succeeds without change, so a retry is safe.
     */
    public VolumeMetadata grow(final Volume volume, final long newSize) throws VolumeException {
        final VolumeMetadata metadata = volume.metadata();
        final String name = metadata.name();
        if (metadata.kind() != VolumeMetadata.Kind.FILE) {
            throw new VolumeException(VolumeException.Code.INVALID_DEVICE, "volume '" + name + "' is the block device "
                + metadata.devicePath() + "; grow the logical volume itself, then register it again");
        }
        checkSize(newSize);
        if (newSize < metadata.size()) {
            throw new VolumeException(VolumeException.Code.INVALID_SIZE, "cannot shrink volume '" + name + "' from "
                + metadata.size() + " to " + newSize + " bytes; volumes only grow");
        }
        if (newSize == metadata.size()) {
            return metadata;
        }
        final VolumeMetadata grown = metadata.withSize(newSize);
        try {
            volume.grow(newSize, grown);
            writeRecord(existing(name), grown);
        } catch (final IOException e) {
            throw new VolumeException(VolumeException.Code.IO_ERROR, "cannot grow volume '" + name + "': "
                + reason(e), e);
        }
        LOG.info("grew volume {} from {} to {} bytes", name, metadata.size(), newSize);
        return grown;
    }

    /** The networks allowed to open a volume, as stored; {@code null} means the server's default policy. */
    public List<String> readAcl(final String name) throws VolumeException {
        checkName(name);
        final Path file = existing(name).resolve(ACL);
        if (!Files.exists(file)) {
            return null;
        }
        try {
            return JSON.readValue(Files.readAllBytes(file), AclRecord.class).allow();
        } catch (final IOException e) {
            throw corrupt(file, e.getMessage(), e);
        }
    }

    /** Stores a volume's access list atomically; {@code null} removes it (back to the default policy). */
    public void writeAcl(final String name, final List<String> allow) throws VolumeException {
        checkName(name);
        final Path dir = existing(name);
        try {
            if (allow == null) {
                Files.deleteIfExists(dir.resolve(ACL));
                syncDirectory(dir);
            } else {
                writeJson(dir, ACL, new AclRecord(List.copyOf(allow)));
            }
        } catch (final IOException e) {
            throw new VolumeException(VolumeException.Code.IO_ERROR, "cannot store the access list of volume '" + name
                + "': " + reason(e), e);
        }
    }

    // ------------------------------------------------------------------- side records of other modules

    /**
     * Reads a side record ({@link #MIRROR_RECORD}) of a volume, or {@code null} if it has none. Side records belong
     * to the modules above storage; this class only keeps them crash-safe and inside the volume's directory.
     */
    public <T> T readSideRecord(final String name, final String file, final Class<T> type) throws VolumeException {
        checkName(name);
        checkSideRecord(file);
        final Path path = existing(name).resolve(file);
        if (!Files.exists(path)) {
            return null;
        }
        try {
            return JSON.readValue(Files.readAllBytes(path), type);
        } catch (final IOException e) {
            throw corrupt(path, e.getMessage(), e);
        }
    }

    /** Replaces a side record atomically and durably (temporary file, fsync, rename, fsync of the directory). */
    public void writeSideRecord(final String name, final String file, final Object value) throws VolumeException {
        checkName(name);
        checkSideRecord(file);
        final Path dir = existing(name);
        try {
            writeJson(dir, file, value);
        } catch (final IOException e) {
            throw new VolumeException(VolumeException.Code.IO_ERROR, "cannot store " + file + " of volume '" + name
                + "': " + reason(e) + "; check the disc", e);
        }
    }

    private static void checkSideRecord(final String file) {
        if (!file.equals(MIRROR_RECORD)) {
            throw new IllegalArgumentException("unknown side record " + file);
        }
    }

    /** {@code acl.json}: the client networks allowed to open the volume. */
    record AclRecord(List<String> allow) {
    }

    private static void checkDevice(final VolumeMetadata metadata, final FileBlockDevice device, final Path data)
        throws VolumeException {
        final String name = metadata.name();
        if (metadata.kind() == VolumeMetadata.Kind.BLOCK_DEVICE) {
            if (!device.isBlockDevice()) {
                throw new VolumeException(VolumeException.Code.INVALID_DEVICE, "volume '" + name + "': " + data
                    + " is no longer a block device; reattach the device, or delete the volume");
            }
            if (device.size() != metadata.size()) {
                LOG.warn("volume {}: device {} now has {} bytes, the record says {}; serving the device's size",
                    name, data, device.size(), metadata.size());
            }
            return;
        }
        if (device.isBlockDevice()) {
            throw new VolumeException(VolumeException.Code.CORRUPT, "volume '" + name + "': " + data + " is a block"
                + " device but volume.json records a file volume; move it away, then restore the file");
        }
        if (device.size() != metadata.size()) {
            throw new VolumeException(VolumeException.Code.CORRUPT, "volume '" + name + "': " + data + " has "
                + device.size() + " bytes but its volume.json records " + metadata.size() + "; the record is what"
                + " clients were promised, so restore the file from a backup, or truncate it to the recorded size"
                + " if it only grew");
        }
    }

    private static VolumeException missingData(final String name, final Path data) {
        return new VolumeException(VolumeException.Code.CORRUPT, "volume '" + name + "' has no data: " + data
            + " is missing; restore it from a backup, or delete the volume");
    }

    // ------------------------------------------------------------------------------------------------ locks

    /**
     * Takes the data directory's server lock ({@code DATA/nbdtail.lock}) and writes this process's pid into it.
     * A server holds it while it runs; mutating offline commands hold it while they work, so they refuse to run
     * under a live server. Closing the result releases it.
     *
     * @throws VolumeException {@code LOCKED} if another process (or another holder in this one) has it.
     */
    public AutoCloseable lockDataDirectory() throws VolumeException {
        final Path file = dataDir.resolve(SERVER_LOCK);
        final Lock lock;
        try {
            // Another process's clean-up holds the lock for a few milliseconds; wait that out.
            lock = tryLock(file, true, SERVER_LOCK_WAIT_MILLIS);
        } catch (final IOException e) {
            throw new VolumeException(VolumeException.Code.IO_ERROR, "cannot lock data directory " + dataDir + " ("
                + reason(e) + "); run as a user that can write " + file, e);
        }
        if (lock == null) {
            throw new VolumeException(VolumeException.Code.LOCKED, "data directory " + dataDir + " is already served"
                + " by another nbdtail process (" + lockOwner(file) + " from " + file + "); stop it first");
        }
        try (FileChannel channel = FileChannel.open(file, StandardOpenOption.WRITE)) {
            channel.truncate(0);
            channel.write(ByteBuffer.wrap(("pid=" + ProcessHandle.current().pid() + "\n")
                .getBytes(StandardCharsets.US_ASCII)));
        } catch (final IOException e) {
            LOG.debug("cannot record the pid in {}: {}", file, reason(e));
        }
        return lock;
    }

    /** "pid N" as recorded in the server lock file, for messages. */
    private static String lockOwner(final Path file) {
        try {
            final String text = Files.readString(file, StandardCharsets.US_ASCII).trim();
            if (text.startsWith("pid=") && text.substring(4).chars().allMatch(Character::isDigit)
                && text.length() > 4) {
                return "pid " + text.substring(4);
            }
        } catch (final IOException e) {
            // Informational only.
        }
        return "pid unknown";
    }

    // ------------------------------------------------------------------------------------------------ delete

    /**
     * Deletes a volume that no process has open: its record, its data file and its directory. A block device
     * is only unregistered, never touched. A volume whose record is corrupt can be deleted too.
     *
     * @throws VolumeException {@code LOCKED} while the volume is open.
     */
    public void delete(final String name) throws VolumeException {
        checkName(name);
        final Path dir = existing(name);
        final Path lockFile = dir.resolve(LOCK);
        final Path trash = volumesDir.resolve("." + name + DELETING + randomSuffix());
        try (Lock ignored = lock(name, lockFile, "volume '" + name + "' is in use by another nbdtail process (lock "
            + lockFile + " is held); stop serving it, then delete it")) {
            String kind = "unreadable record";
            try {
                kind = readRecord(dir).kind().toString();
            } catch (final VolumeException e) {
                LOG.warn("deleting volume {} whose record is unreadable: {}", name, e.getMessage());
            }
            // One atomic step takes the volume out of the listing; what follows is tidying up, and a crash in it
            // leaves a dot-directory that open() removes.
            Files.move(dir, trash, StandardCopyOption.ATOMIC_MOVE);
            syncDirectory(volumesDir);
            Files.deleteIfExists(trash.resolve(DATA));
            Files.deleteIfExists(trash.resolve(RECORD));
            deleteTree(trash);
            LOG.info("deleted volume {} ({})", name, kind);
        } catch (final NoSuchFileException e) {
            throw notFound(name);
        } catch (final IOException e) {
            throw new VolumeException(VolumeException.Code.IO_ERROR, "cannot delete volume '" + name + "': "
                + reason(e) + "; run the command again once the cause is fixed", e);
        }
        try {
            syncDirectory(volumesDir);
        } catch (final IOException e) {
            LOG.debug("cannot sync {}: {}", volumesDir, reason(e));
        }
    }

    // ------------------------------------------------------------------------------------------------ rules

    /**
     * Checks a volume name. Names are directory names and NBD export names: 1 to 128 characters of
     * {@code A-Z a-z 0-9 . _ -}, starting with a letter or digit (so never {@code .} or {@code ..}), without
     * {@code /}, and without {@code @}, which is reserved for snapshot exports ({@code volume@snapshot}).
     *
     * @throws VolumeException {@code INVALID_NAME} naming the rule that was broken.
     */
    public static void checkName(final String name) throws VolumeException {
        if (name == null || name.isEmpty()) {
            throw invalidName(name, "a volume needs a name of 1 to " + MAX_NAME_LENGTH + " characters");
        }
        if (name.length() > MAX_NAME_LENGTH) {
            throw invalidName(name, "it has " + name.length() + " characters; use at most " + MAX_NAME_LENGTH);
        }
        for (int i = 0; i < name.length(); i++) {
            final char c = name.charAt(i);
            final boolean alphanumeric = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9';
            if (c == '@') {
                throw invalidName(name, "'@' is reserved for snapshot exports (volume@snapshot)");
            }
            if (c == '/') {
                throw invalidName(name, "a name cannot contain '/'");
            }
            if (i == 0 && !alphanumeric) {
                throw invalidName(name, "a name must start with a letter or digit");
            }
            if (!alphanumeric && c != '.' && c != '_' && c != '-') {
                throw invalidName(name, "character " + printable(String.valueOf(c)) + " is not allowed");
            }
        }
    }

    private static VolumeException invalidName(final String name, final String rule) {
        final String shown = name == null ? "" : name.length() > 40 ? name.substring(0, 40) + "..." : name;
        return new VolumeException(VolumeException.Code.INVALID_NAME, "invalid volume name " + printable(shown) + ": "
            + rule + "; use 1 to " + MAX_NAME_LENGTH + " letters, digits, '.', '_' or '-', starting with a letter or"
            + " digit");
    }

    /** Sizes are positive multiples of 512 up to 2^62. */
    private static long checkSize(final long size) throws VolumeException {
        if (size <= 0) {
            throw new VolumeException(VolumeException.Code.INVALID_SIZE, "invalid volume size " + size + ": a volume"
                + " needs a size greater than 0, such as 20G");
        }
        if (size % SECTOR != 0) {
            final long up = size > MAX_SIZE ? MAX_SIZE : (size / SECTOR + 1) * SECTOR;
            throw new VolumeException(VolumeException.Code.INVALID_SIZE, "invalid volume size " + size + ": it must"
                + " be a multiple of 512 bytes, for example " + up);
        }
        if (size > MAX_SIZE) {
            throw new VolumeException(VolumeException.Code.INVALID_SIZE, "invalid volume size " + size + ": it must"
                + " be at most 2^62 bytes (" + Sizes.format(MAX_SIZE) + ")");
        }
        return size;
    }

    // ------------------------------------------------------------------------------------------------ records

    /** The directory of an existing volume (one with a record). */
    private Path existing(final String name) throws VolumeException {
        final Path dir = volumesDir.resolve(name);
        if (!Files.isRegularFile(dir.resolve(RECORD))) {
            throw notFound(name);
        }
        return dir;
    }

    private VolumeException notFound(final String name) {
        return new VolumeException(VolumeException.Code.NOT_FOUND, "volume '" + name + "' not found in " + dataDir
            + "; check the name with 'nbdtail volume list --data-dir " + dataDir + "'");
    }

    private static Path dataPath(final Path dir, final VolumeMetadata metadata) {
        return metadata.kind() == VolumeMetadata.Kind.FILE ? dir.resolve(DATA) : Path.of(metadata.devicePath());
    }

    private static VolumeMetadata readRecord(final Path dir) throws VolumeException {
        final Path file = dir.resolve(RECORD);
        final JsonNode tree;
        try {
            tree = JSON.readTree(Files.readAllBytes(file));
        } catch (final NoSuchFileException e) {
            throw new VolumeException(VolumeException.Code.NOT_FOUND, file + " does not exist");
        } catch (final JsonProcessingException e) {
            throw corrupt(file, "it is not valid JSON (" + e.getOriginalMessage() + ")", e);
        } catch (final IOException e) {
            throw new VolumeException(VolumeException.Code.IO_ERROR, "cannot read " + file + ": " + reason(e), e);
        }
        if (tree == null || !tree.isObject()) {
            throw corrupt(file, "it does not hold a JSON object", null);
        }
        final JsonNode version = tree.get("formatVersion");
        if (version == null || !version.isInt()) {
            throw corrupt(file, "it has no formatVersion", null);
        }
        if (version.intValue() != VolumeMetadata.FORMAT_VERSION) {
            throw new VolumeException(VolumeException.Code.CORRUPT, file + " has format version "
                + version.intValue() + " but this nbdtail reads only version " + VolumeMetadata.FORMAT_VERSION
                + (version.intValue() > VolumeMetadata.FORMAT_VERSION ? "; upgrade nbdtail to serve it"
                : "; restore the file from a backup"));
        }
        final VolumeMetadata metadata;
        try {
            metadata = JSON.treeToValue(tree, VolumeMetadata.class);
        } catch (final JsonProcessingException e) {
            throw corrupt(file, e.getOriginalMessage(), e);
        } catch (final RuntimeException e) {
            throw corrupt(file, e.toString(), e);
        }
        final String dirName = dir.getFileName().toString();
        if (!metadata.name().equals(dirName)) {
            throw corrupt(file, "it names volume '" + metadata.name() + "' but lives in directory '" + dirName + "'",
                null);
        }
        try {
            checkName(metadata.name());
            checkSize(metadata.size());
        } catch (final VolumeException e) {
            throw corrupt(file, e.getMessage(), e);
        }
        if ((metadata.kind() == VolumeMetadata.Kind.BLOCK_DEVICE) != (metadata.devicePath() != null)) {
            throw corrupt(file, "kind " + metadata.kind() + " does not fit devicePath " + metadata.devicePath(),
                null);
        }
        return metadata;
    }

    private static VolumeException corrupt(final Path file, final String what, final Throwable cause) {
        return new VolumeException(VolumeException.Code.CORRUPT, file + " is damaged: " + what + "; restore it from"
            + " a backup, or move the volume's directory away to drop the volume", cause);
    }

    private void writeRecord(final Path dir, final VolumeMetadata metadata) throws IOException {
        writeJson(dir, RECORD, metadata);
    }

    /** Replaces {@code dir/name} atomically: a temporary file, fsync, rename, fsync of the directory. */
    private void writeJson(final Path dir, final String name, final Object value) throws IOException {
        final Path temp = dir.resolve(name + ".tmp");
        final byte[] bytes = (JSON.writeValueAsString(value) + "\n").getBytes(StandardCharsets.UTF_8);
        try (FileChannel channel = io.open(temp, Set.of(StandardOpenOption.CREATE, StandardOpenOption.WRITE,
            StandardOpenOption.TRUNCATE_EXISTING))) {
            final ByteBuffer buffer = ByteBuffer.wrap(bytes);
            while (buffer.hasRemaining()) {
                channel.write(buffer);
            }
            channel.force(true);
        }
        io.move(temp, dir.resolve(name));
        io.syncDirectory(dir);
    }

    /**
     * The JSON of {@code volume.json}: pretty, fields in declaration order, {@code created} as ISO-8601. Public so
     * that the server's other records (operations, API replies) use the same conventions.
     */
    public static ObjectMapper mapper() {
        final SimpleModule time = new SimpleModule("nbdtail-instant");
        time.addSerializer(Instant.class, ToStringSerializer.instance);
        time.addDeserializer(Instant.class, new InstantDeserializer());
        return new ObjectMapper()
            .registerModule(time)
            .addMixIn(VolumeMetadata.class, VolumeMetadataOrder.class)
            .enable(SerializationFeature.INDENT_OUTPUT)
            .enable(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES)
            .enable(DeserializationFeature.FAIL_ON_MISSING_CREATOR_PROPERTIES)
            .enable(DeserializationFeature.FAIL_ON_NULL_FOR_PRIMITIVES);
    }

    /** Pins the field order of {@code volume.json}, so that rewrites produce minimal diffs. */
    @JsonPropertyOrder({"formatVersion", "id", "name", "kind", "size", "devicePath", "description", "readOnly",
        "created"})
    private interface VolumeMetadataOrder {
    }

    /** An ISO-8601 instant ({@code 2026-11-23T08:29:00.123Z}), as {@link Instant#toString()} writes it. */
    private static final class InstantDeserializer extends StdScalarDeserializer<Instant> {
        private static final long serialVersionUID = 1L;

        InstantDeserializer() {
            super(Instant.class);
        }

        @Override
        public Instant deserialize(final JsonParser parser, final DeserializationContext context) throws IOException {
            if (parser.currentToken() != JsonToken.VALUE_STRING) {
                return (Instant) context.handleUnexpectedToken(Instant.class, parser);
            }
            final String text = parser.getText();
            try {
                return Instant.parse(text);
            } catch (final DateTimeException e) {
                return (Instant) context.handleWeirdStringValue(Instant.class, text, "not an ISO-8601 instant such as"
                    + " 2026-01-31T12:00:00Z");
            }
        }
    }

    // ------------------------------------------------------------------------------------------------ files

    private static void syncDirectory(final Path dir) throws IOException {
        try (FileChannel channel = FileChannel.open(dir, StandardOpenOption.READ)) {
            channel.force(true);
        }
    }

    /**
     * Removes what interrupted creates and deletes left: {@code .NAME.creating-*} and {@code .NAME.deleting-*}
     * directories, and volume directories without a record that hold nothing but our own bookkeeping. Only
     * while nobody holds the data directory: a server or a mutating command may be building one right now.
     */
    private void cleanUp() {
        final Lock guard;
        try {
            guard = tryLock(dataDir.resolve(SERVER_LOCK), true);
        } catch (final IOException e) {
            LOG.debug("not cleaning up {}: cannot take {}: {}", volumesDir, SERVER_LOCK, reason(e));
            return;
        }
        if (guard == null) {
            LOG.debug("not cleaning up {}: another process holds the data directory", volumesDir);
            return;
        }
        try (guard; DirectoryStream<Path> dirs = Files.newDirectoryStream(volumesDir)) {
            for (final Path dir : dirs) {
                final String name = dir.getFileName().toString();
                if (!Files.isDirectory(dir, LinkOption.NOFOLLOW_LINKS) || lockHeld(dir.resolve(LOCK))) {
                    continue;
                }
                if (name.startsWith(".") && name.contains(CREATING)) {
                    LOG.warn("removing {}, left by an interrupted volume create", dir);
                    deleteTree(dir);
                } else if (name.startsWith(".") && name.contains(DELETING)) {
                    LOG.warn("removing {}, left by an interrupted volume delete", dir);
                    deleteTree(dir);
                } else if (!name.startsWith(".") && !Files.exists(dir.resolve(RECORD))) {
                    if (onlyBookkeeping(dir)) {
                        LOG.warn("removing {}: it has no {} and no data", dir, RECORD);
                        deleteTree(dir);
                    } else {
                        LOG.warn("ignoring {}: it has no {}; restore the record if it is a volume, else move the"
                            + " directory away", dir, RECORD);
                    }
                }
            }
        } catch (final IOException e) {
            LOG.warn("cannot clean up {}: {}", volumesDir, reason(e));
        }
    }

    private static boolean onlyBookkeeping(final Path dir) throws IOException {
        try (Stream<Path> entries = Files.list(dir)) {
            return entries.allMatch(p -> {
                final String n = p.getFileName().toString();
                return !n.equals(DATA) && OUR_FILES.contains(n);
            });
        }
    }

    private static void deleteTree(final Path root) {
        if (!Files.exists(root, LinkOption.NOFOLLOW_LINKS)) {
            return;
        }
        // Files.walk does not follow symbolic links: a link to a device is removed, never what it points at.
        try (Stream<Path> walk = Files.walk(root)) {
            walk.sorted(Comparator.reverseOrder()).forEach(p -> {
                try {
                    Files.deleteIfExists(p);
                } catch (final IOException e) {
                    LOG.warn("cannot delete {}: {}", p, reason(e));
                }
            });
        } catch (final IOException e) {
            LOG.warn("cannot delete {}: {}", root, reason(e));
        }
    }

    private static String randomSuffix() {
        return Long.toHexString(ThreadLocalRandom.current().nextLong() | Long.MIN_VALUE);
    }

    // ------------------------------------------------------------------------------------------------ flock

    /**
     * Takes the volume lock at {@code file} (creating it) or throws {@code LOCKED} with {@code heldMessage}. Waits
     * briefly first, because {@link #info} in another process holds the lock for a moment to test it.
     */
    private Lock lock(final String name, final Path file, final String heldMessage) throws VolumeException {
        final Lock lock;
        try {
            lock = tryLock(file, true, VOLUME_LOCK_WAIT_MILLIS);
        } catch (final NoSuchFileException | NativeIoException e) {
            if (e instanceof NativeIoException n && n.errno() != NativeIo.ENOENT) {
                throw cannotLock(file, e);
            }
            throw notFound(name); // The volume's directory went away: a delete won the race.
        } catch (final IOException e) {
            throw cannotLock(file, e);
        }
        if (lock == null) {
            throw new VolumeException(VolumeException.Code.LOCKED, heldMessage);
        }
        return lock;
    }

    private static VolumeException cannotLock(final Path file, final IOException e) {
        return new VolumeException(VolumeException.Code.IO_ERROR, "cannot lock " + file + ": " + reason(e)
            + "; run as a user that can write the data directory", e);
    }

    /** {@link #tryLock(Path, boolean)}, retried every few milliseconds for up to {@code waitMillis}. */
    private Lock tryLock(final Path file, final boolean create, final long waitMillis) throws IOException {
        final long deadline = System.nanoTime() + waitMillis * 1_000_000;
        while (true) {
            final Lock lock = tryLock(file, create);
            if (lock != null || System.nanoTime() - deadline >= 0) {
                return lock;
            }
            try {
                Thread.sleep(10);
            } catch (final InterruptedException e) {
                Thread.currentThread().interrupt();
                return null;
            }
        }
    }

    /**
     * {@code flock(LOCK_EX | LOCK_NB)} on {@code file}, opened read-only (enough for flock, and it works for users
     * who may only read the data directory).
     *
     * @param create create the file if missing; if {@code false} a missing file fails with ENOENT.
     * @return the lock, or {@code null} if someone else holds it.
     */
    private Lock tryLock(final Path file, final boolean create) throws IOException {
        if (create) {
            try (FileChannel ignored = FileChannel.open(file, StandardOpenOption.CREATE, StandardOpenOption.WRITE)) {
                // Only creates it; flock needs a descriptor of its own (below), one per holder.
            } catch (final AccessDeniedException e) {
                if (!Files.exists(file)) {
                    throw e;
                }
            }
        }
        final int fd = nativeIo.open(file.toString(), NativeIo.O_RDONLY);
        boolean locked = false;
        try {
            locked = nativeIo.tryLockExclusive(fd);
        } finally {
            if (!locked) {
                closeQuietly(fd);
            }
        }
        return locked ? new Lock(fd) : null;
    }

    /** Whether another open file description holds {@code file}'s lock. Creates nothing. */
    private boolean lockHeld(final Path file) {
        try (Lock lock = tryLock(file, false)) {
            return lock == null;
        } catch (final IOException e) {
            if (!(e instanceof NativeIoException ne && ne.errno() == NativeIo.ENOENT)) {
                LOG.debug("cannot test {}: {}", file, reason(e));
            }
            return false;
        }
    }

    private void closeQuietly(final int fd) {
        try {
            nativeIo.close(fd);
        } catch (final NativeIoException ignored) {
            // The descriptor is gone either way.
        }
    }

    /** An flock held through its own descriptor; closing the descriptor releases it. Idempotent. */
    private final class Lock implements AutoCloseable {
        private final int fd;
        private final AtomicBoolean closed = new AtomicBoolean();

        Lock(final int fd) {
            this.fd = fd;
        }

        @Override
        public void close() {
            if (closed.compareAndSet(false, true)) {
                closeQuietly(fd);
            }
        }
    }

    // ------------------------------------------------------------------------------------------------ messages

    /** An {@link IOException} as a phrase: the JDK's file exceptions carry only a path as their message. */
    private static String reason(final IOException e) {
        if (e instanceof AccessDeniedException a) {
            return "permission denied: " + a.getFile();
        }
        if (e instanceof NoSuchFileException n) {
            return "no such file or directory: " + n.getFile();
        }
        if (e instanceof FileAlreadyExistsException f) {
            return "already exists: " + f.getFile();
        }
        if (e instanceof NotDirectoryException n) {
            return "not a directory: " + n.getFile();
        }
        if (e instanceof DirectoryNotEmptyException d) {
            return "directory not empty: " + d.getFile();
        }
        return e.getMessage() != null ? e.getMessage() : e.toString();
    }

    /** What to do about a failed create, where the cause is common enough to name. */
    private static String hint(final IOException e) {
        final String message = String.valueOf(e.getMessage());
        if (message.contains("File too large")) {
            return "; the file system cannot hold a file this large (ext4 stops at 16 TiB): choose a smaller size"
                + " or a data directory on XFS";
        }
        if (message.contains("No space left") || message.contains("Disk quota")) {
            return "; free some space and try again";
        }
        if (e instanceof AccessDeniedException) {
            return "; run as a user that can write the data directory";
        }
        return "";
    }

    /** {@code 'text'} with control characters escaped, so that a message never garbles a terminal. */
    private static String printable(final String text) {
        final StringBuilder b = new StringBuilder("'");
        for (int i = 0; i < text.length(); i++) {
            final char c = text.charAt(i);
            if (c < 0x20 || c == 0x7f) {
                b.append(String.format("\\u%04x", (int) c));
            } else {
                b.append(c);
            }
        }
        return b.append('\'').toString();
    }
}
