package io.nbdtail.volume;

import java.nio.file.Path;

/**
 * What {@link VolumeService#info} reports about a volume.
 *
 * @param metadata       the volume's record.
 * @param dataPath       the data file, or the block device.
 * @param allocatedBytes bytes that hold data (for a block device: its size).
 * @param inUse          whether a process has the volume open.
 */
public record VolumeInfo(VolumeMetadata metadata, Path dataPath, long allocatedBytes, boolean inUse) {
}
