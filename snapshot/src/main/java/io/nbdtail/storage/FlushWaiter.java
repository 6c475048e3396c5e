package io.nbdtail.storage;

/** Something waiting for a sync of the volume: a FLUSH, or a FUA write that is not yet durable. */
public interface FlushWaiter {
    /**
     * Called once, on a storage thread, after a sync that started after this waiter joined.
     *
     * @param failure {@code null} if the data is durable, otherwise why not.
     */
    void onFlushed(StorageException failure);
}
