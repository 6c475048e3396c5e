package io.nbdtail.replication;

import java.util.UUID;

/**
 * What identifies one mirror of one volume to the destination.
 *
 * @param volume    the volume's name (the same on both tails).
 * @param volumeId  the source volume's id; the destination adopts it and refuses another.
 * @param sessionId random per mirror started; a destination that holds the copy of this session can resume.
 * @param size      the volume's size in bytes; a destination of another size refuses.
 * @param epoch     the volume's ownership epoch on the source; the cutover hands over {@code epoch + 1}.
 */
public record MirrorSession(String volume, UUID volumeId, String sessionId, long size, long epoch) {
}
