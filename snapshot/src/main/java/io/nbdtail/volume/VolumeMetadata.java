package io.nbdtail.volume;

import com.fasterxml.jackson.annotation.JsonIgnoreProperties;

import java.time.Instant;
import java.util.Objects;
import java.util.UUID;

/**
 * What the data directory records about a volume, stored as {@code volume.json} in the volume's directory.
 *
 * @param formatVersion version of this record's layout; readers refuse versions they do not know.
 * @param id            a random identity, so that two volumes of the same name (say, before and after a move)
 *                      are never mistaken for each other.
 * @param name          the volume name, which is also the NBD export name.
 * @param kind          where the bytes live.
 * @param size          size in bytes.
 * @param devicePath    the block device for {@link Kind#BLOCK_DEVICE}; {@code null} for a file volume, whose data
 *                      is {@code data.raw} next to this record.
 * @param description   free text shown in NBD_OPT_LIST and NBD_INFO_DESCRIPTION; may be empty.
 * @param readOnly      serve read-only.
 * @param created       creation time.
 */
@JsonIgnoreProperties(ignoreUnknown = false)
public record VolumeMetadata(int formatVersion, UUID id, String name, Kind kind, long size, String devicePath,
                             String description, boolean readOnly, Instant created) {
    /** The only format version this build reads and writes. */
    public static final int FORMAT_VERSION = 1;

    /** Where a volume's bytes live. */
    public enum Kind {
        /** A sparse raw file inside the data directory. */
        FILE,
        /** An existing block device (a RAID logical volume) registered by path. */
        BLOCK_DEVICE
    }

    /** This record with another size. */
    public VolumeMetadata withSize(final long newSize) {
        return new VolumeMetadata(formatVersion, id, name, kind, newSize, devicePath, description, readOnly, created);
    }

    public VolumeMetadata {
        Objects.requireNonNull(id, "id");
        Objects.requireNonNull(name, "name");
        Objects.requireNonNull(kind, "kind");
        Objects.requireNonNull(created, "created");
        description = description == null ? "" : description;
    }
}
