package io.nbdtail.replication;

import java.util.List;
import java.util.UUID;

/**
 * What identifies one mirror of one volume to the destination.
 *
 * @param volume    the volume's name (the same on both tails).
 * @param volumeId  the source volume's id; the destination adopts it and refuses another.
 * @param sessionId random per mirror started; a destination that holds the copy of this session can resume.
 * @param size      the volume's size in bytes; a destination of another size refuses.
 * @param epoch     the volume's ownership epoch on the source; the cutover hands over {@code epoch + 1}.
 * @param snapshots the volume's snapshots in the order they are copied (see {@link SnapshotLayer#plan}); empty
 *                  for a volume without snapshots.
 * @param topParent the snapshot the live disc's active layer rests on, or {@code null} without snapshots.
 */
public record MirrorSession(String volume, UUID volumeId, String sessionId, long size, long epoch,
                            List<SnapshotLayer> snapshots, String topParent) {
    public MirrorSession {
        snapshots = List.copyOf(snapshots);
    }

    /** A session of a volume without snapshots. */
    public MirrorSession(final String volume, final UUID volumeId, final String sessionId, final long size,
                         final long epoch) {
        this(volume, volumeId, sessionId, size, epoch, List.of(), null);
    }

    /** Whether the snapshot layers travel too. */
    public boolean layered() {
        return !snapshots.isEmpty();
    }
}
