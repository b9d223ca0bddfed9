// Signature stub of androidx.test.ext.junit.runners.AndroidJUnit4.
package androidx.test.ext.junit.runners;

public final class AndroidJUnit4 {}
