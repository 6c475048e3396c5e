package io.nbdtail.volume;

import com.fasterxml.jackson.core.JsonGenerator;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.databind.DeserializationContext;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonDeserializer;
import com.fasterxml.jackson.databind.JsonSerializer;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.SerializerProvider;
import com.fasterxml.jackson.databind.module.SimpleModule;
import io.nbdtail.storage.FileBlockDevice;
import io.nbdtail.storage.nativeio.NativeIo;
import io.nbdtail.storage.nativeio.NativeIoException;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.UUID;
import java.util.concurrent.Executor;
import java.util.regex.Pattern;

/**
 * Volume management on one data directory: create, list, inspect, open and delete volumes. The offline CLI and
 * the daemon (and later the control API) all go through this class, so the rules live in one place.
 *
 * <pre>
 * DATA/nbdtail.lock              flock'd by the server serving DATA (pid inside, for people)
 * DATA/volumes/NAME/volume.json  {@link VolumeMetadata}
 * DATA/volumes/NAME/data.raw     a file volume's bytes, sparse, length == size
 * DATA/volumes/NAME/lock         flock'd by the process that has the volume open
 * </pre>
 *
 * <p>Crash safety: a volume is built in {@code volumes/.NAME.creating-RANDOM} and renamed into place when
 * complete, so a crash never leaves a half volume that {@link #list} shows; {@link #open} removes leftovers.
 * Records are replaced atomically (write a temporary file, sync it, rename, sync the directory).
 */
public final class VolumeService {
    private static final Logger LOG = LoggerFactory.getLogger(VolumeService.class);
    private static final Pattern NAME = Pattern.compile("[A-Za-z0-9][A-Za-z0-9._-]{0,127}");
    private static final long MAX_SIZE = 1L << 62;
    private static final String RECORD = "volume.json";
    private static final String DATA = "data.raw";
    private static final String LOCK = "lock";
    private static final String CREATING = ".creating-";

    private final Path dataDir;
    private final Path volumesDir;
    private final NativeIo nativeIo;
    private final ObjectMapper json;

    private VolumeService(final Path dataDir, final NativeIo nativeIo) {
        this.dataDir = dataDir;
        this.volumesDir = dataDir.resolve("volumes");
        this.nativeIo = nativeIo;
        this.json = mapper();
    }

    public static VolumeService open(final Path dataDir) throws VolumeException {
        return open(dataDir, NativeIo.get());
    }

    /** Opens (creating if needed) a data directory and removes what an interrupted create or delete left. */
    public static VolumeService open(final Path dataDir, final NativeIo nativeIo) throws VolumeException {
        final VolumeService service = new VolumeService(dataDir.toAbsolutePath().normalize(), nativeIo);
        try {
            Files.createDirectories(service.volumesDir);
        } catch (final IOException e) {
            throw new VolumeException(VolumeException.Code.IO_ERROR, "cannot create data directory " + dataDir + ": "
                + e.getMessage() + "; check that the path is writable", e);
        }
        service.cleanUp();
        return service;
    }

    static ObjectMapper mapper() {
        final SimpleModule time = new SimpleModule("instant");
        time.addSerializer(Instant.class, new JsonSerializer<>() {
            @Override
            public void serialize(final Instant value, final JsonGenerator gen, final SerializerProvider provider)
                throws IOException {
                gen.writeString(value.toString());
            }
        });
        time.addDeserializer(Instant.class, new JsonDeserializer<>() {
            @Override
            public Instant deserialize(final JsonParser p, final DeserializationContext ctx) throws IOException {
                return Instant.parse(p.getValueAsString());
            }
        });
        return new ObjectMapper().registerModule(time).enable(SerializationFeature.INDENT_OUTPUT)
            .enable(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES);
    }

    public Path dataDir() {
        return dataDir;
    }

    // ------------------------------------------------------------------------------------------------ create

    /**
     * Creates a volume.
     *
     * @param size       bytes; for a block device 0 means "the device's size".
     * @param devicePath {@code null} for a sparse file volume, else an existing block device to register.
     */
    public VolumeMetadata create(final String name, final long size, final String devicePath,
                                 final String description, final boolean readOnly) throws VolumeException {
        checkName(name);
        final Path dir = volumesDir.resolve(name);
        if (Files.exists(dir)) {
            throw new VolumeException(VolumeException.Code.ALREADY_EXISTS, "volume '" + name + "' already exists;"
                + " choose another name or delete it first");
        }
        final long finalSize = devicePath == null ? checkSize(size) : deviceSize(devicePath, size);
        final VolumeMetadata metadata = new VolumeMetadata(VolumeMetadata.FORMAT_VERSION, UUID.randomUUID(), name,
            devicePath == null ? VolumeMetadata.Kind.FILE : VolumeMetadata.Kind.BLOCK_DEVICE, finalSize,
            devicePath == null ? null : Path.of(devicePath).toAbsolutePath().normalize().toString(),
            description == null ? "" : description, readOnly, Instant.now());
        final Path temp = volumesDir.resolve(CREATING.substring(0, 1) + name + CREATING.substring(1)
            + UUID.randomUUID().toString().substring(0, 8));
        try {
            Files.createDirectory(temp);
            Files.createFile(temp.resolve(LOCK));
            if (devicePath == null) {
                try (RandomAccessFile f = new RandomAccessFile(temp.resolve(DATA).toFile(), "rw")) {
                    f.setLength(finalSize);
                    f.getFD().sync();
                }
            }
            writeRecord(temp, metadata);
            Files.move(temp, dir, StandardCopyOption.ATOMIC_MOVE);
            syncDirectory(volumesDir);
        } catch (final IOException e) {
            deleteTree(temp);
            throw new VolumeException(VolumeException.Code.IO_ERROR, "cannot create volume '" + name + "': "
                + e.getMessage(), e);
        }
        LOG.info("created volume {} ({} bytes, {})", name, finalSize, metadata.kind());
        return metadata;
    }

    private long deviceSize(final String devicePath, final long size) throws VolumeException {
        final int fd;
        try {
            fd = nativeIo.open(devicePath, NativeIo.O_RDONLY);
        } catch (final NativeIoException e) {
            throw new VolumeException(VolumeException.Code.INVALID_DEVICE, "cannot open device " + devicePath + ": "
                + e.getMessage(), e);
        }
        try {
            if (!nativeIo.isBlockDevice(fd)) {
                throw new VolumeException(VolumeException.Code.INVALID_DEVICE, devicePath + " is not a block device;"
                    + " give the path of a disc or logical volume, or use --size for a file volume");
            }
            final long deviceSize = nativeIo.blockDeviceSize(fd);
            if (size != 0 && size != deviceSize) {
                throw new VolumeException(VolumeException.Code.INVALID_SIZE, "size " + size + " does not match the"
                    + " size of " + devicePath + " (" + deviceSize + " bytes); leave the size out for a device");
            }
            return checkSize(deviceSize);
        } catch (final NativeIoException e) {
            throw new VolumeException(VolumeException.Code.INVALID_DEVICE, "cannot inspect device " + devicePath
                + ": " + e.getMessage(), e);
        } finally {
            closeQuietly(fd);
        }
    }

    // ------------------------------------------------------------------------------------------------ read

    /** Every volume, sorted by name. A record that cannot be read is skipped with a warning, never fatal. */
    public List<VolumeMetadata> list() {
        final List<VolumeMetadata> result = new ArrayList<>();
        try (DirectoryStream<Path> dirs = Files.newDirectoryStream(volumesDir)) {
            for (final Path dir : dirs) {
                final String name = dir.getFileName().toString();
                if (name.startsWith(".") || !Files.isDirectory(dir)) {
                    continue;
                }
                try {
                    result.add(readRecord(dir));
                } catch (final VolumeException e) {
                    LOG.warn("skipping {}: {}", dir.resolve(RECORD), e.getMessage());
                }
            }
        } catch (final IOException e) {
            LOG.warn("cannot list {}: {}", volumesDir, e.toString());
        }
        result.sort(Comparator.comparing(VolumeMetadata::name));
        return result;
    }

    public VolumeMetadata metadata(final String name) throws VolumeException {
        checkName(name);
        return readRecord(existing(name));
    }

    public VolumeInfo info(final String name) throws VolumeException {
        final VolumeMetadata metadata = metadata(name);
        final Path dir = volumesDir.resolve(name);
        final Path data = dataPath(dir, metadata);
        final long allocated = metadata.kind() == VolumeMetadata.Kind.FILE ? allocatedBytes(data) : metadata.size();
        return new VolumeInfo(metadata, data, allocated, lockHeld(dir.resolve(LOCK)));
    }

    private long allocatedBytes(final Path data) throws VolumeException {
        int fd = -1;
        try {
            fd = nativeIo.open(data.toString(), NativeIo.O_RDONLY);
            final long size = Files.size(data);
            long allocated = 0;
            long position = 0;
            while (position < size) {
                final long start = nativeIo.seekData(fd, position);
                if (start < 0) {
                    break;
                }
                long end = nativeIo.seekHole(fd, start);
                if (end < 0) {
                    end = size;
                }
                allocated += end - start;
                position = end;
            }
            return allocated;
        } catch (final IOException e) {
            throw new VolumeException(VolumeException.Code.IO_ERROR, "cannot inspect " + data + ": " + e.getMessage(),
                e);
        } finally {
            if (fd >= 0) {
                closeQuietly(fd);
            }
        }
    }

    // ------------------------------------------------------------------------------------------------ open

    /**
     * Opens a volume for serving and takes its lock; the returned {@link Volume} releases it on close.
     *
     * @throws VolumeException {@code LOCKED} if another process (or another opener in this one) has it.
     */
    public Volume openVolume(final String name, final Executor storageExecutor) throws VolumeException {
        final VolumeMetadata metadata = metadata(name);
        final Path dir = volumesDir.resolve(name);
        final Lock lock = lock(dir.resolve(LOCK), () -> "volume '" + name + "' is in use by another nbdtail"
            + " process (lock " + dir.resolve(LOCK) + " is held); stop that process first, or serve a different data"
            + " directory");
        FileBlockDevice device = null;
        try {
            device = FileBlockDevice.open(dataPath(dir, metadata), metadata.readOnly(), nativeIo);
            if (device.size() != metadata.size()) {
                throw new VolumeException(VolumeException.Code.CORRUPT, "volume '" + name + "': "
                    + dataPath(dir, metadata) + " has " + device.size() + " bytes but volume.json records "
                    + metadata.size() + "; restore the file or fix the record, then run the server again");
            }
            return new Volume(metadata, device, storageExecutor, lock);
        } catch (final IOException e) {
            if (device != null) {
                device.close();
            }
            lock.close();
            throw new VolumeException(VolumeException.Code.IO_ERROR, "cannot open volume '" + name + "': "
                + e.getMessage(), e);
        } catch (final VolumeException | RuntimeException e) {
            if (device != null) {
                device.close();
            }
            lock.close();
            throw e;
        }
    }

    /**
     * Takes the data directory's server lock; one server per data directory. Mutating offline commands take it
     * too, so they refuse to run under a live server.
     */
    public AutoCloseable lockDataDirectory() throws VolumeException {
        final Path file = dataDir.resolve("nbdtail.lock");
        final Lock lock = lock(file, () -> "data directory " + dataDir + " is already served by another nbdtail"
            + " process (" + lockOwner(file) + " from " + file + "); stop it first, or use its control API");
        try {
            Files.writeString(file, "pid=" + ProcessHandle.current().pid() + "\n", StandardCharsets.UTF_8,
                StandardOpenOption.TRUNCATE_EXISTING, StandardOpenOption.WRITE);
        } catch (final IOException e) {
            LOG.debug("cannot record the pid in {}: {}", file, e.toString());
        }
        return lock;
    }

    private static String lockOwner(final Path file) {
        try {
            final String text = Files.readString(file, StandardCharsets.UTF_8).trim();
            return text.startsWith("pid=") ? "pid " + text.substring(4) : "unknown pid";
        } catch (final IOException e) {
            return "unknown pid";
        }
    }

    // ------------------------------------------------------------------------------------------------ delete

    /** Deletes a volume that nobody has open. A block device itself is never touched. */
    public void delete(final String name) throws VolumeException {
        final VolumeMetadata metadata = metadata(name);
        final Path dir = volumesDir.resolve(name);
        try (Lock ignored = lock(dir.resolve(LOCK), () -> "volume '" + name + "' is in use; stop serving it before"
            + " deleting it")) {
            // Data first, record last: a crash in between leaves a directory without a record, which open()
            // removes; never a record pointing at missing data that someone might serve.
            Files.deleteIfExists(dir.resolve(DATA));
            syncDirectory(dir);
            Files.deleteIfExists(dir.resolve(RECORD));
        } catch (final IOException e) {
            throw new VolumeException(VolumeException.Code.IO_ERROR, "cannot delete volume '" + name + "': "
                + e.getMessage(), e);
        }
        deleteTree(dir);
        try {
            syncDirectory(volumesDir);
        } catch (final IOException e) {
            LOG.debug("cannot sync {}: {}", volumesDir, e.toString());
        }
        LOG.info("deleted volume {} ({})", name, metadata.kind());
    }

    // ------------------------------------------------------------------------------------------------ rules

    /** Volume names are file names and export names: 1-128 of {@code A-Za-z0-9._-}, not starting with a dot. */
    public static void checkName(final String name) throws VolumeException {
        if (name == null || !NAME.matcher(name).matches()) {
            throw new VolumeException(VolumeException.Code.INVALID_NAME, "invalid volume name '" + name + "': use"
                + " 1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit ('@' is reserved for"
                + " snapshots)");
        }
    }

    /** Sizes are positive multiples of 512 up to 2^62. */
    public static long checkSize(final long size) throws VolumeException {
        if (size <= 0 || size > MAX_SIZE || size % 512 != 0) {
            throw new VolumeException(VolumeException.Code.INVALID_SIZE, "invalid volume size " + size + ": it must"
                + " be a positive multiple of 512 bytes and at most 2^62 bytes");
        }
        return size;
    }

    // ------------------------------------------------------------------------------------------------ helpers

    private Path existing(final String name) throws VolumeException {
        final Path dir = volumesDir.resolve(name);
        if (!Files.isRegularFile(dir.resolve(RECORD))) {
            throw new VolumeException(VolumeException.Code.NOT_FOUND, "volume '" + name + "' not found in "
                + dataDir + "; list the volumes with: nbdtail volume list --data-dir " + dataDir);
        }
        return dir;
    }

    private static Path dataPath(final Path dir, final VolumeMetadata metadata) {
        return metadata.kind() == VolumeMetadata.Kind.FILE ? dir.resolve(DATA) : Path.of(metadata.devicePath());
    }

    private VolumeMetadata readRecord(final Path dir) throws VolumeException {
        final Path file = dir.resolve(RECORD);
        final VolumeMetadata metadata;
        try {
            metadata = json.readValue(Files.readAllBytes(file), VolumeMetadata.class);
        } catch (final NoSuchFileException e) {
            throw new VolumeException(VolumeException.Code.NOT_FOUND, "no record at " + file);
        } catch (final IOException | RuntimeException e) {
            throw new VolumeException(VolumeException.Code.CORRUPT, "cannot read " + file + ": " + e.getMessage(), e);
        }
        if (metadata.formatVersion() != VolumeMetadata.FORMAT_VERSION) {
            throw new VolumeException(VolumeException.Code.CORRUPT, file + " has format version "
                + metadata.formatVersion() + ", this nbdtail reads version " + VolumeMetadata.FORMAT_VERSION);
        }
        if (!metadata.name().equals(dir.getFileName().toString())) {
            throw new VolumeException(VolumeException.Code.CORRUPT, file + " names volume '" + metadata.name()
                + "' but lives in directory '" + dir.getFileName() + "'");
        }
        return metadata;
    }

    private void writeRecord(final Path dir, final VolumeMetadata metadata) throws IOException {
        final Path temp = dir.resolve(RECORD + ".tmp");
        try (FileChannel ch = FileChannel.open(temp, StandardOpenOption.CREATE, StandardOpenOption.WRITE,
            StandardOpenOption.TRUNCATE_EXISTING)) {
            ch.write(java.nio.ByteBuffer.wrap(json.writeValueAsBytes(metadata)));
            ch.force(true);
        }
        Files.move(temp, dir.resolve(RECORD), StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        syncDirectory(dir);
    }

    private static void syncDirectory(final Path dir) throws IOException {
        try (FileChannel ch = FileChannel.open(dir, StandardOpenOption.READ)) {
            ch.force(true);
        }
    }

    private void cleanUp() {
        try (DirectoryStream<Path> dirs = Files.newDirectoryStream(volumesDir)) {
            for (final Path dir : dirs) {
                final String name = dir.getFileName().toString();
                if (name.startsWith(".") && name.contains(CREATING)) {
                    LOG.warn("removing {} left by an interrupted volume create", dir);
                    deleteTree(dir);
                } else if (Files.isDirectory(dir) && !Files.exists(dir.resolve(RECORD))
                    && !lockHeld(dir.resolve(LOCK))) {
                    LOG.warn("removing {} left by an interrupted volume delete", dir);
                    deleteTree(dir);
                }
            }
        } catch (final IOException e) {
            LOG.warn("cannot clean up {}: {}", volumesDir, e.toString());
        }
    }

    private boolean lockHeld(final Path file) {
        if (!Files.exists(file)) {
            return false;
        }
        try (Lock ignored = lock(file, () -> "held")) {
            return false;
        } catch (final VolumeException e) {
            return e.code() == VolumeException.Code.LOCKED;
        }
    }

    private Lock lock(final Path file, final java.util.function.Supplier<String> heldMessage)
        throws VolumeException {
        final int fd;
        try {
            if (!Files.exists(file)) {
                Files.createFile(file);
            }
            fd = nativeIo.open(file.toString(), NativeIo.O_RDWR);
        } catch (final IOException e) {
            throw new VolumeException(VolumeException.Code.IO_ERROR, "cannot open lock " + file + ": "
                + e.getMessage(), e);
        }
        try {
            if (!nativeIo.tryLockExclusive(fd)) {
                closeQuietly(fd);
                throw new VolumeException(VolumeException.Code.LOCKED, heldMessage.get());
            }
        } catch (final NativeIoException e) {
            closeQuietly(fd);
            throw new VolumeException(VolumeException.Code.IO_ERROR, "cannot lock " + file + ": " + e.getMessage(), e);
        }
        return new Lock(fd);
    }

    private void closeQuietly(final int fd) {
        try {
            nativeIo.close(fd);
        } catch (final NativeIoException ignored) {
            // Gone either way.
        }
    }

    private static void deleteTree(final Path root) {
        if (!Files.exists(root)) {
            return;
        }
        try (var walk = Files.walk(root)) {
            walk.sorted(Comparator.reverseOrder()).forEach(p -> {
                try {
                    Files.deleteIfExists(p);
                } catch (final IOException e) {
                    LOG.warn("cannot delete {}: {}", p, e.toString());
                }
            });
        } catch (final IOException e) {
            LOG.warn("cannot delete {}: {}", root, e.toString());
        }
    }

    /** An flock held on an open descriptor; closing the descriptor releases it. */
    private final class Lock implements AutoCloseable {
        private int fd;

        Lock(final int fd) {
            this.fd = fd;
        }

        @Override
        public void close() {
            if (fd >= 0) {
                closeQuietly(fd);
                fd = -1;
            }
        }
    }
}
