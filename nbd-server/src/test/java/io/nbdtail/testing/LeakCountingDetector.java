package io.nbdtail.testing;

import io.netty.util.ResourceLeakDetector;

import java.util.concurrent.atomic.AtomicInteger;

/**
 * Netty's leak detector, counting what it reports so that {@link LeakCheckExtension} can fail the test class.
 * Installed with {@code -Dio.netty.customResourceLeakDetector=io.nbdtail.testing.LeakCountingDetector} (see the
 * parent pom's {@code test.flags}).
 */
public final class LeakCountingDetector<T> extends ResourceLeakDetector<T> {
    static final AtomicInteger LEAKS = new AtomicInteger();
    static volatile String lastReport = "";

    public LeakCountingDetector(final Class<?> resourceType, final int samplingInterval, final long maxActive) {
        super(resourceType, samplingInterval, maxActive);
    }

    public LeakCountingDetector(final Class<?> resourceType, final int samplingInterval) {
        super(resourceType, samplingInterval);
    }

    @Override
    protected boolean needReport() {
        return true;
    }

    @Override
    protected void reportTracedLeak(final String resourceType, final String records) {
        LEAKS.incrementAndGet();
        lastReport = resourceType + records;
        super.reportTracedLeak(resourceType, records);
    }

    @Override
    protected void reportUntracedLeak(final String resourceType) {
        LEAKS.incrementAndGet();
        lastReport = resourceType;
        super.reportUntracedLeak(resourceType);
    }
}
