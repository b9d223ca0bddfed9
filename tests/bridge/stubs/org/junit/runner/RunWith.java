// Signature stub of org.junit.runner.RunWith (value typed loosely: the stub runner is not a Runner).
package org.junit.runner;

import java.lang.annotation.Retention;
import java.lang.annotation.RetentionPolicy;

@Retention(RetentionPolicy.RUNTIME)
public @interface RunWith {
    Class<?> value();
}
